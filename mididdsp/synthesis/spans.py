"""Where a voice sounds, and synthesis over those stretches only: the render's cost follows the notes that sound.

A voice of the synthesis generator is silent (level and noise at :data:`SILENCE_DB`) before its first note and
once a note's release has fallen to that level. :func:`note_spans` finds, from the notes alone, the frames that
may sound (each note, plus the release the generator's learned rate needs from a bounded level); the generator
computes those frames with its receptive field of context (:func:`mididdsp.synthesis.generator.generate_spans`).
In the controls, :func:`silent_frames` marks the frames at the silence level, which :func:`gate_silence` makes
exactly silent (0, not 1e-5), and :func:`sounding_runs` cuts the frames into runs separated by silence; each run is
synthesised on its own (:func:`synthesize_run`), its oscillator starting at phase 0 (a silent oscillator has no
audible phase) and its noise read from an excitation that is a fixed function of the absolute sample
(:func:`noise_excitation`), so what a run sounds like does not depend on which other frames were computed. The dry
runs of the voices that share a reverb are summed on a bus (:class:`ReverbBus`), and the buses are reverberated and
mixed block by block, each block's spectra summed and brought back once (:func:`mixed_blocks`).

Units: frames at :data:`~mididdsp.dsp.FRAME_RATE` (250 Hz, frame ``i`` centred on sample ``i * hop``), samples at
the synthesizer's rate; spans and runs are half-open ``(first, stop)`` frame ranges. Controls are one voice's numpy
arrays, ``f0_hz`` and ``amplitude`` [T], ``harmonic_distribution`` [T, K], ``noise_magnitudes`` [T, M] (as
:meth:`mididdsp.synthesis.inference.GeneratorInference.spans` gives them); nothing here imports torch.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from mididdsp import scipy_kernels
from mididdsp.dsp import kernels
from mididdsp.dsp.constants import AMPLITUDE_UPSAMPLING, CONTROL_NAMES, FRAME_RATE, NYQUIST_FADE, fast_fft_size

RUN_EDGE_FRAMES = 2     # silent frames kept either side of a run: the first and last segments ramp from / to 0, and
                        # the noise filters' output reaches half their length (64 samples) before the first segment
MIN_SILENT_GAP = 2 * RUN_EDGE_FRAMES  # a shorter silence stays inside its run (runs never overlap)


def note_frames(notes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each note's first frame and the frame where it stops sounding (its end, or the next note's first frame),
    as the generator lays notes on frames (:func:`mididdsp.synthesis.generator.frame_layout`).

    Args:
        notes: [N, 4] start_s, end_s, pitch, velocity, in time order.
    Returns:
        (first [N], stop [N]) int64 frame numbers.
    """
    notes = np.asarray(notes, np.float64).reshape(-1, 4)
    first = np.floor(notes[:, 0] * FRAME_RATE + 0.5).astype(np.int64)
    end = np.maximum(np.floor(notes[:, 1] * FRAME_RATE + 0.5).astype(np.int64), first + 1)
    stop = np.minimum(end, np.append(first[1:], np.iinfo(np.int64).max))
    return first, stop


def note_spans(notes: np.ndarray, n_frames: int, release_frames: int, merge_gap: int) -> list[tuple[int, int]]:
    """The frame ranges of a voice that may sound: each note's frames, the ``release_frames`` after it stops, and
    :data:`RUN_EDGE_FRAMES` either side; ranges less than ``merge_gap`` frames apart are merged (computing them
    apart would cost their context twice). Frames outside are silent whenever every note ends below the level the
    release was sized for.

    Args:
        notes: [N, 4] start_s, end_s, pitch, velocity, in time order.
        n_frames: frames of the whole render (spans are cut to 0 .. n_frames).
        release_frames: frames the generator's release needs to fall to silence from the bounding level.
        merge_gap: frames; typically twice the generator's receptive field.
    Returns:
        sorted, disjoint ``(first, stop)`` frame ranges.
    """
    first, stop = note_frames(notes)
    spans: list[list[int]] = []
    for a, b in zip((first - RUN_EDGE_FRAMES).tolist(), (stop + release_frames + RUN_EDGE_FRAMES).tolist()):
        a, b = max(0, a), min(n_frames, b)
        if a >= b:
            continue
        if spans and a - spans[-1][1] < merge_gap:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return [(a, b) for a, b in spans]


def generator_pieces(onsets: list[int], spans: list[tuple[int, int]], chunk_frames: int, context: int,
                     n_frames: int) -> list[list[tuple[int, int, int, int]]]:
    """How the generator computes each span of a voice: per span, its pieces ``(first, last, start, stop)``, the
    piece's frames ``first .. last - 1`` and the window ``start .. stop - 1`` computed for them (``context`` frames
    either side, cut at 0 and ``n_frames``). A span longer than ``chunk_frames`` is cut at note onsets (``onsets``,
    the notes' first frames in time order), so every note lies whole in one piece and the working memory stays
    bounded by the piece's length (and the longest note)."""
    out = []
    for span_first, span_stop in spans:
        cuts = [span_first]
        for onset in onsets:
            if onset - cuts[-1] >= chunk_frames and onset < span_stop:
                cuts.append(onset)
        cuts.append(span_stop)
        out.append([(first, last, max(0, first - context), min(n_frames, last + context))
                    for first, last in zip(cuts[:-1], cuts[1:])])
    return out


def silence_threshold(silence_db: float) -> float:
    """Linear level at or below which a control is at the generator's silence level (float32 rounding allowed)."""
    return float(10.0 ** (silence_db / 20.0)) * (1.0 + 1e-4)


def silent_frames(controls: dict[str, np.ndarray], silence_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Which frames of one voice's controls are at the silence level: (harmonic [T], noise [T]) bool, the noise
    silent where every band is."""
    threshold = silence_threshold(silence_db)
    harmonic = controls["amplitude"] <= threshold
    noise = controls["noise_magnitudes"].max(-1) <= threshold  # every band: the loudest
    return harmonic, noise


def gate_silence(controls: dict[str, np.ndarray], harmonic_silent: np.ndarray, noise_silent: np.ndarray,
                 gain: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Controls with ``amplitude`` 0 on ``harmonic_silent`` frames and ``noise_magnitudes`` 0 on ``noise_silent``
    frames ([T] bool each): the silence level made exact, so that silent stretches need no synthesis. ``gain``
    ([T] linear, the MIDI file's volume controllers) scales both elsewhere, in the same pass (as
    :func:`mididdsp.dsp.processors.scale_level` would, to the bit)."""
    gain = np.ones(len(harmonic_silent), np.float32) if gain is None else np.asarray(gain, np.float32)
    amplitude = controls["amplitude"] * np.where(harmonic_silent, np.float32(0), gain)
    noise = controls["noise_magnitudes"] * np.where(noise_silent, np.float32(0), gain)[:, None]
    return {**controls, "amplitude": amplitude, "noise_magnitudes": noise}


def sounding_runs(silent: np.ndarray) -> list[tuple[int, int]]:
    """Runs of frames to synthesise from a [T] bool mask of silent frames: each stretch of sounding frames with
    :data:`RUN_EDGE_FRAMES` silent frames either side (cut to 0 .. T); silences shorter than
    :data:`MIN_SILENT_GAP` frames stay inside a run. Outside the runs the synthesis is exactly 0."""
    sounding = np.flatnonzero(~np.asarray(silent, bool))
    if sounding.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sounding) > MIN_SILENT_GAP)
    starts = np.concatenate([sounding[:1], sounding[breaks + 1]])
    ends = np.concatenate([sounding[breaks], sounding[-1:]]) + 1
    total = len(silent)
    return [(max(0, int(a) - RUN_EDGE_FRAMES), min(total, int(b) + RUN_EDGE_FRAMES)) for a, b in zip(starts, ends)]


def run_controls(controls: dict[str, np.ndarray], first: int, stop: int, silent: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """The frames ``first .. stop - 1`` of gated controls for :func:`synthesize_run`, with ``f0_hz``
    held over the silent frames at the run's edges (``silent`` [T] bool): the oscillator's phase runs through them
    into the first sounding frame, and the generator's f0 there belongs to the rest after an earlier note, which a
    span need not have computed exactly (its per-note centring needs that note's frames). Held, the run depends
    only on its sounding frames."""
    run = {name: controls[name][first:stop] for name in CONTROL_NAMES}
    sounding = np.flatnonzero(~silent[first:stop])
    if sounding.size:
        f0 = run["f0_hz"].copy()
        head, tail = int(sounding[0]), int(sounding[-1])
        f0[:head] = f0[head]
        f0[tail + 1:] = f0[tail]
        run["f0_hz"] = f0
    return run


def noise_excitation(seed: int, first_sample: int, n_samples: int) -> np.ndarray:
    """Uniform noise in [-1, 1), [n_samples] float32, for samples ``first_sample ..`` of a voice: a fixed function
    of ``seed`` and the absolute sample (a counter-based generator, :func:`mididdsp.dsp.kernels.uniform_noise`), so
    a run reads the same excitation whichever other runs are synthesised."""
    return kernels.uniform_noise(seed, first_sample, n_samples)


def synthesize_run(controls: dict[str, np.ndarray], first_sample: int, seed: int, hop_size: int, sample_rate: int,
                   nyquist_fade: float = NYQUIST_FADE, amplitude_upsampling: str = AMPLITUDE_UPSAMPLING
                   ) -> np.ndarray:
    """The dry audio of one run of frames: harmonic (phase 0 at the run's first frame) + filtered noise, in one
    compiled pass (:func:`mididdsp.dsp.kernels.dry_synthesis`; equal to the synthesizer's streaming tensor code to
    float rounding, tests/test_render_sparse.py).

    Args:
        controls: the run's F frames (gated; silent at both ends, see :func:`sounding_runs`).
        first_sample: absolute sample of the run's first frame (its noise excitation, :func:`noise_excitation`).
        seed: the voice's noise seed.
        hop_size, sample_rate, nyquist_fade, amplitude_upsampling: the synthesizer's (``DDSPSynth.harmonic``'s).
    Returns:
        [(F - 1) * hop_size] float32 audio from ``first_sample`` on (frame ``F - 1`` is where it ends).
    """
    n_samples = (len(controls["f0_hz"]) - 1) * hop_size
    return kernels.dry_synthesis(controls["f0_hz"], controls["amplitude"], controls["harmonic_distribution"],
                                 controls["noise_magnitudes"], noise_excitation(seed, first_sample, n_samples),
                                 hop_size, sample_rate, nyquist_fade, amplitude_upsampling)


class ReverbBus:
    """The dry voices that share one impulse response (a bus), block by block, for :func:`mixed_blocks`.

    The reverb is linear, so it runs once on the bus's sum; and the buses of a mix are summed as spectra, so one
    inverse FFT a block brings the whole mix back (one a bus was half the reverb's work in a many-instrument file).

    Args:
        segments: the bus's dry audio as ``(first_sample, [length] float32)`` pieces, summed in this order (voice
            order, then each voice's runs).
        n_samples: the render's length; audio past it is dropped.
        block: samples per block.
        impulse_response: [taps] (or [1, taps]) wet impulse response (tap 0 is 0: the dry path is added), or None:
            the dry sum.
        keep: memorise each block's spectrum once computed (the editor's buses, mixed again after every edit); a
            render keeps nothing.
    """

    def __init__(self, segments: list[tuple[int, np.ndarray]], n_samples: int, block: int,
                 impulse_response: np.ndarray | None, keep: bool = False):
        self.n_samples, self.block = n_samples, block
        self.touching: dict[int, list[tuple[int, np.ndarray]]] = {}  # block -> the segments over it, in sum order
        for first, audio in segments:
            stop = min(first + len(audio), n_samples)
            for index in range(first // block, (stop - 1) // block + 1):
                self.touching.setdefault(index, []).append((first, audio))
        self.taps = self.n_fft = 0
        self.response_spectrum = None
        if impulse_response is not None:
            # the dry path folded into tap 0: one product a block gives dry + wet
            response = np.array(impulse_response, np.float32).reshape(-1)  # a copy: tap 0 is changed
            response[0] += 1.0
            self.taps = len(response)
            self.n_fft = fast_fft_size(min(block, n_samples) + self.taps - 1)
            self.response_spectrum = scipy_kernels.rfft(response, self.n_fft)
        self.memo: dict[int, np.ndarray] | None = {} if keep else None

    def dry(self, index: int) -> np.ndarray:
        """The bus's dry sum over block ``index`` ([<= block] float32)."""
        start = index * self.block
        piece = np.zeros(min(self.block, self.n_samples - start), np.float32)
        for first, audio in self.touching.get(index, ()):
            low, high = max(first, start), min(first + len(audio), start + len(piece))
            piece[low - start:high - start] += audio[low - first:high - first]
        return piece

    def spectrum(self, index: int, counter: dict | None = None) -> np.ndarray:
        """rfft of block ``index``'s dry sum times the bus's response (dry path included): [n_fft // 2 + 1]."""

        if self.memo is not None and index in self.memo:
            return self.memo[index]
        spectrum = scipy_kernels.rfft(self.dry(index), self.n_fft)
        spectrum *= self.response_spectrum
        if counter is not None:
            counter["reverb_blocks"] = counter.get("reverb_blocks", 0) + 1
        if self.memo is not None:
            self.memo[index] = spectrum
        return spectrum


def mixed_blocks(buses: list[ReverbBus], map_blocks: Callable = map, counter: dict | None = None
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """The sum of ``buses``, each dry + its reverb, block by block: ``(first_sample, audio)`` for every block that
    is not silent, in time order, equal (to float rounding) to the sum of
    :func:`~mididdsp.dsp.effects.apply_reverb` of each whole summed bus. Nothing of the render's length is
    allocated: a caller adds each block where it wants it (a 10-minute bus is 38 MB, and first-touching a fresh
    array of that size cost more than summing into it).

    A block no bus touches is skipped unless a reverb tail is pending (then it is the tail alone); a silent block
    under no tail is never yielded. Each block's spectra are summed in bus order and brought back by one inverse FFT
    (scipy's pocketfft, one thread: torch's MKL FFT rounds differently with the number of torch threads, and a render
    must be the same bits however many threads or batch workers run it). A block depends on itself alone, so
    ``map_blocks`` (``map``, or :func:`mididdsp.parallel.ordered_map` over threads) may compute them in any order and
    on any thread: the carried tail is added here, in order, and the bits are the same. Buses without a reverb give
    their dry sum. ``counter["reverb_blocks"]`` (if given) counts the bus blocks transformed.
    """
    if not buses:
        return
    reverb = buses[0].response_spectrum is not None
    if any((bus.response_spectrum is not None) != reverb or bus.n_fft != buses[0].n_fft for bus in buses):
        raise ValueError("mixed_blocks: the buses of one mix need the same reverb length (or none at all)")
    n_samples, block, taps, n_fft = buses[0].n_samples, buses[0].block, buses[0].taps, buses[0].n_fft
    sounding = sorted({index for bus in buses for index in bus.touching})
    if not sounding:
        return

    def computed(index: int) -> np.ndarray | None:
        members = [bus for bus in buses if index in bus.touching]
        if not reverb:
            piece = members[0].dry(index)
            for bus in members[1:]:
                piece += bus.dry(index)
            return piece
        total = members[0].spectrum(index, counter)
        if members[0].memo is not None:  # a memorised spectrum is the bus's own: sum into a copy
            total = total.copy()
        for bus in members[1:]:
            total += bus.spectrum(index, counter)
        length = min(block, n_samples - index * block)
        return scipy_kernels.irfft(total, n_fft)[:length + taps - 1]

    if not reverb:
        yield from ((index * block, piece) for index, piece in zip(sounding, map_blocks(computed, sounding)))
        return
    results = iter(map_blocks(computed, sounding))
    touched = set(sounding)
    tail: np.ndarray | None = None  # [<= taps - 1] audio owed to the samples after the last block
    for index in range(sounding[0], -(-n_samples // block)):
        start = index * block
        length = min(block, n_samples - start)
        if index not in touched:
            if tail is None:
                if index > sounding[-1]:
                    break
                continue
            count = min(length, len(tail))
            yield start, tail[:count]
            tail = tail[count:] if count < len(tail) else None
            continue
        audio = next(results)
        if tail is not None:
            audio[:len(tail)] += tail[:len(audio)]
            if len(tail) > len(audio):
                audio = np.concatenate([audio, tail[len(audio):]])
        yield start, audio[:length]
        tail = audio[length:]
