"""MIDI -> audio: the top of the inference path (the commands over it: :mod:`mididdsp.render_command`).

Python (``mididdsp render`` is a thin layer over exactly this)::

    import mididdsp
    model = mididdsp.load_model()                     # the shipped default, or load_model("path/to/model")
    score = mididdsp.read_midi("song.mid")
    expression = model.expression(score, seed=0, temperature=1.0)   # NoteExpression, one row per note
    expression[expression.pitch > 72, "vibrato"] = 0.9
    out = model.render(score, expression, seed=0)     # out.audio (float32 mono), out.sample_rate, out.stems
    # the same in two steps, for a caller that changes a few voices and re-renders only those (the editor):
    voices = model.render_voices(score, expression, seed=0)   # {(track, voice): VoiceAudio}, dry
    out = model.mix_voices(score, voices)             # bit-identical to model.render(...)

A MIDI model is a directory holding two model directories: ``generator/`` (:class:`SynthesisGenerator` with its
synthesizer and reverb) and ``prior/`` (:class:`ExpressionPrior`). Each track's notes are split into monophonic
voices (:func:`mididdsp.score.split_voices`: every onset stays where the file puts it); the prior writes each
note's expression (velocity-aware), the generator turns each voice into synthesis controls, pitch bend is added
to f0 (a note whose bend already carries vibrato gets none from the prior), CC7 and CC11 scale the level with the
General MIDI law (40 log10(value / 127) dB each), CC1 deepens the vibrato, and the voices are synthesised and
summed. A mix that would clip is scaled down, and the caller is told.

Each track's General MIDI program picks its instrument (:mod:`mididdsp.instruments`). Drums are skipped.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from mididdsp.controllers import apply_modulation, leave_vibrato_to_bends, midi_volume_gain

PRETRAINED_MIDI = Path(__file__).resolve().parent / "pretrained" / "midi"
TAIL_S = 1.0                # audio after the last note: release and reverb
RELEASE_BOUND_DB = 0.0      # a voice's span lasts until the release from a note ending at this level (full scale)
                            # is silent; a note ending louder makes that voice compute every frame (still exact)
HEADROOM_PEAK = 0.99        # a mix peaking above this is scaled down to it
MAX_VOICES_PER_TRACK = 16   # more simultaneous notes than this in one track are dropped, with a warning
MAX_RENDER_S = 3600.0       # a longer file is refused: an absurd tempo, not music (and gigabytes of audio)


@dataclasses.dataclass
class VoiceAudio:
    """One voice's dry synthesis, before the reverb and the mix (:meth:`MidiModel.render_voices`).

    ``segments``: ``(first sample, float32 audio)`` of each run of sounding frames, at 16 kHz and at the level the
    mix sums (outside them the voice is exactly 0); ``curves``: ``(first frame, f0_hz [n], amplitude_db [n])`` of
    each stretch of frames the generator computed, as played (pitch bend and CC7/CC11 applied; silence at -100 dB).
    """

    track: int
    voice: int
    instrument: str
    segments: list
    curves: list


@dataclasses.dataclass
class Rendered:
    """A render: ``audio`` float32 [samples] (mono), its ``sample_rate``, ``stems`` {track index: audio},
    ``gain_db`` applied to avoid clipping (0 when none), ``messages`` (instrument choices, warnings) and ``work``
    (what was computed, see :meth:`MidiModel.render`)."""

    audio: Any
    sample_rate: int
    stems: dict
    gain_db: float
    messages: list
    work: dict = dataclasses.field(default_factory=dict)


class MidiModel:
    """Expression prior + synthesis generator (+ its synthesizer) + instrument table. See the module docstring."""

    def __init__(self, generator, prior, directory: Path | None = None, device: str = "cpu"):
        """``generator``, ``prior``: the inference models (:class:`~mididdsp.synthesis.inference.GeneratorInference`,
        :class:`~mididdsp.expression.prior_inference.PriorInference`; numpy, no torch), as :func:`load_model`
        makes them from a model directory. ``device``: where :meth:`torch_module` puts the torch modules."""
        from mididdsp.models import model_metadata

        self.generator, self.prior, self.directory, self.device = generator, prior, directory, device
        self._modules: dict = {}
        metadata = model_metadata(generator)
        self.instruments: dict[str, int] = dict(metadata.get("instruments") or {"default": 0})
        self.statistics: dict = metadata.get("statistics") or {}
        self.ranges = {name: tuple(pair) for name, pair in generator.config.ranges.items()}
        prior_ids = model_metadata(prior).get("instruments") or {}
        self.prior_ids = {name: int(prior_ids.get(name, 0)) for name in self.instruments}
        from mididdsp.expression.levels import CONFIG_KEY, VelocityLevels

        # velocity -> each track's level offset for tables from the prior (None: offset 0, models fitted before it)
        self.velocity_levels = VelocityLevels.from_config(model_metadata(prior).get(CONFIG_KEY),
                                                          f"{directory / 'prior' if directory else 'prior'} config")

    def torch_module(self, part: str):
        """The torch module of ``part`` (``"generator"``: :class:`~mididdsp.synthesis.generator.SynthesisGenerator`
        with its synthesizer, ``"prior"``: :class:`~mididdsp.expression.prior.ExpressionPrior`), loaded from the
        model directory on first use (this imports torch): for training, analysis and the dry render's level match;
        rendering needs none."""
        from mididdsp.errors import ModelError
        from mididdsp.models import load_model as load_part

        if part not in self._modules:
            if self.directory is None:
                raise ModelError(f"this MIDI model has no directory to load its torch {part} from")
            expected = {"generator": ("SynthesisGenerator",), "prior": ("ExpressionPrior",)}[part]
            self._modules[part] = load_part(self.directory / part, self.device, expected=expected)
        return self._modules[part]

    # ---------------------------------------------------------------------------------------- instruments
    def median_pitch(self, name: str) -> float:
        stats = (self.statistics.get(name) or {}).get("pitch_midi") or {}
        return float((stats.get("percentiles") or {}).get("50", stats.get("mean", 60.0)))

    def instrument_for(self, program: int, pitches: list[int] | None = None) -> tuple[str, str]:
        """(instrument, how it was chosen) for a General MIDI program and the track's pitches
        (:func:`mididdsp.instruments.choose_instrument`)."""
        from mididdsp.instruments import choose_instrument

        return choose_instrument(program, pitches, list(self.instruments), self.median_pitch)

    def check_instrument(self, name: str) -> str:
        from mididdsp.errors import MididdspError

        key = name.lower()
        if key not in self.instruments:
            raise MididdspError(f"instrument {name!r}: this model has {', '.join(sorted(self.instruments))}")
        return key

    def track_instruments(self, score, instrument: str | None = None,
                          per_track: dict[int, str] | None = None) -> tuple[list[str | None], list[str]]:
        """Each track's instrument (None for drums and empty tracks) and one message per choice made."""
        names: list[str | None] = []
        messages = []
        per_track = {int(k): self.check_instrument(v) for k, v in (per_track or {}).items()}
        if instrument is not None:
            instrument = self.check_instrument(instrument)
        for index, track in enumerate(score.tracks):
            if track.is_drum or not track.notes:
                if track.is_drum and track.notes:
                    messages.append(f"track {index} ({track.name or 'drums'}): drums skipped")
                names.append(None)
            elif index in per_track:
                names.append(per_track[index])
            elif instrument is not None:
                names.append(instrument)
            else:
                name, how = self.instrument_for(track.program, [n.pitch for n in track.notes])
                names.append(name)
                if how != "exact":
                    messages.append(f"track {index} ({track.name or 'unnamed'}): program {track.program} plays "
                                    f"{name} ({how})")
        return names, messages

    # ---------------------------------------------------------------------------------------- expression
    def voices(self, score) -> list[tuple[int, int, list]]:
        """(track, voice, notes) of every melodic track, at most MAX_VOICES_PER_TRACK voices each (warning)."""
        from mididdsp.score import split_voices

        out = []
        for index, track in enumerate(score.tracks):
            if track.is_drum or not track.notes:
                continue
            voices = split_voices(track.notes)
            if len(voices) > MAX_VOICES_PER_TRACK:
                dropped = sum(len(v) for v in voices[MAX_VOICES_PER_TRACK:])
                warnings.warn(f"track {index}: {len(voices)} simultaneous voices; the {dropped} notes beyond "
                              f"{MAX_VOICES_PER_TRACK} voices are not played", stacklevel=3)
                voices = voices[:MAX_VOICES_PER_TRACK]
            out += [(index, v, notes) for v, notes in enumerate(voices)]
        return out

    def expression(self, score, seed: int | None = 0, temperature: float = 1.0, instrument: str | None = None,
                   track_instruments: dict[int, str] | None = None, fixed=None, fixed_columns=None):
        """The prior's note expression for every note of the score: a NoteExpression, one row per note (the
        columns of ``mididdsp extract``), sampled with ``seed`` at ``temperature`` (0: the most likely).

        ``fixed`` (a NoteExpression of this score, e.g. an edited earlier result) and ``fixed_columns`` (control
        names, default all seven): those columns keep their values exactly, on every note, and the other columns
        are sampled consistently with them (the prior conditions on them).

        ``level_offset_db``: a fixed table's own, else each track's level from its velocities by the prior's
        ``velocity_levels`` fit (:mod:`mididdsp.expression.levels`: the offset that puts the track's median note
        level where the training recordings with those velocities lie), else 0 (a model without the fit)."""
        import numpy as np

        from mididdsp.errors import MididdspError
        from mididdsp.expression.table import NoteExpression
        from mididdsp.parallel import one_thread

        if not temperature >= 0 or not math.isfinite(temperature):
            raise MididdspError(f"temperature {temperature}: expected a number >= 0")
        names, _ = self.track_instruments(score, instrument, track_instruments)
        voices = self.voices(score)
        columns: dict[str, list] = {key: [] for key in ("track", "voice", "note_index", "start", "end", "pitch",
                                                         "velocity", "instrument")}
        controls = []
        if voices:
            longest = max(len(notes) for _, _, notes in voices)
            notes = np.zeros((len(voices), longest, 4), np.float32)
            mask = np.zeros((len(voices), longest), bool)
            for row, (_, _, voice) in enumerate(voices):
                notes[row, :len(voice)] = [[n.start, n.end, n.pitch, n.velocity] for n in voice]
                mask[row, :len(voice)] = True
            ids = np.array([self.prior_ids[names[t]] for t, _, _ in voices], np.int64)
            fixed_values = fixed_mask = None
            if fixed is not None:
                from mididdsp.synthesis.settings import EXPRESSION_INPUTS

                chosen = list(fixed_columns or EXPRESSION_INPUTS)
                unknown = [c for c in chosen if c not in EXPRESSION_INPUTS]
                if unknown:
                    raise MididdspError(f"fixed_columns {unknown}: expected some of {', '.join(EXPRESSION_INPUTS)}")
                rows = match_expression(fixed, voices, self.ranges)
                fixed_values = np.zeros((len(voices), longest, 7), np.float32)
                fixed_mask = np.zeros((len(voices), longest, 7), bool)
                columns_mask = np.array([c in chosen for c in EXPRESSION_INPUTS])
                for row, (t, v, voice) in enumerate(voices):
                    fixed_values[row, :len(voice)] = rows[(t, v)][:, :7]
                    fixed_mask[row, :len(voice)] = columns_mask
            # the compiled note loop (numpy and numba, no torch): equal to the torch module's loop to float
            # rounding (which the autoregression carries on: a render moves by up to -76 dB of the mix against
            # the torch loop's); the same bits in every process, so a batch worker and `mididdsp render` agree
            with one_thread():  # numpy's BLAS on one thread: the same bits on any machine, no idle spinning
                sampled = self.prior.sample(notes, mask, ids, temperature=temperature, seed=seed,
                                            fixed_values=fixed_values, fixed_mask=fixed_mask)
            leave_vibrato_to_bends(score, voices, sampled, fixed_mask)
            track_offsets = {} if fixed is not None else self.track_offsets(voices, names, sampled)
            for row, (t, v, voice) in enumerate(voices):
                for i, note in enumerate(voice):
                    for key, value in zip(columns, (t, v, i, note.start, note.end, note.pitch, note.velocity, names[t])):
                        columns[key].append(value)
                # a fixed table keeps its recording's level (not a control the prior samples)
                offset = (rows[(t, v)][:, 7:8] if fixed is not None
                          else np.full((len(voice), 1), track_offsets.get(t, 0.0), np.float32))
                controls.append(np.concatenate([sampled[row, :len(voice)], offset], axis=1))
        values = np.concatenate(controls) if controls else np.zeros((0, 8))
        from mididdsp.expression.names import CONTROL_NAMES, LEVEL_OFFSET

        for j, name in enumerate(CONTROL_NAMES):
            columns[name] = values[:, j].clip(0.0, 1.0)
        columns["vibrato_rate_hz"] = values[:, 6].clip(0.0, 15.0)
        columns[LEVEL_OFFSET] = values[:, 7]
        order = sorted(range(len(columns["start"])), key=lambda r: (columns["track"][r], columns["start"][r],
                                                                     columns["voice"][r]))
        return NoteExpression({k: [v[r] for r in order] for k, v in columns.items()}, self.ranges)

    def track_offsets(self, voices: list, names: list, sampled) -> dict[int, float]:
        """{track: level_offset_db (dB)} for the prior's ``sampled`` controls ([voices, notes, 7], rows in
        ``voices`` order) by :attr:`velocity_levels`, ``{}`` without a fit. Per track, over all its voices' notes:
        a training recording was one track, and its level one number (:mod:`mididdsp.expression.levels`)."""
        if self.velocity_levels is None:
            return {}
        low, high = self.ranges["volume"]
        velocities: dict[int, list] = {}
        volumes: dict[int, list] = {}
        for row, (t, _, voice) in enumerate(voices):
            velocities.setdefault(t, []).extend(note.velocity for note in voice)
            scaled = sampled[row, :len(voice), 0].clip(0.0, 1.0)  # as the table and the generator read it
            volumes.setdefault(t, []).extend(low + scaled * (high - low))
        return {t: self.velocity_levels.track_offset_db(names[t], velocities[t], volumes[t]) for t in velocities}

    # ---------------------------------------------------------------------------------------- render
    def render(self, score, expression=None, seed: int | None = 0, temperature: float = 1.0,
               instrument: str | None = None, track_instruments: dict[int, str] | None = None, reverb: bool = True,
               sample_rate: int = 16000, progress: bool = False, timings: dict | None = None,
               stems: bool = True, sparse: bool = True, processes: int = 1) -> Rendered:
        """Render every melodic track of ``score`` with ``expression`` (default: sampled from the prior with
        ``seed`` and ``temperature``); see the module docstring. ``timings``: a dict that receives the seconds
        spent per stage (``prior``, ``generator``, ``synthesizer``, ``reverb``, ``mix``), for benchmarks.

        The cost follows the notes that sound (:mod:`mididdsp.synthesis.spans`): each voice's generator runs over
        the frames that may sound (its notes and their release, with the generator's receptive field of context),
        the synthesizer over the runs of frames above the silence level, and the reverb once per bus (per track
        with ``stems``, else per instrument) on the sum of its dry voices. ``sparse=False`` runs the generator over
        every frame of every voice instead: the reference the sparse render equals (tests; same audio to float
        rounding). ``stems=False`` leaves ``Rendered.stems`` empty (fewer reverb buses). ``Rendered.work`` counts
        ``generator_frames`` (frames the generator computed, context included), ``synthesizer_frames`` (frames the
        synthesizer ran over) and ``reverb_blocks`` (blocks convolved). ``processes``: see :meth:`render_voices`."""
        import time

        from mididdsp.errors import MididdspError

        _, messages = self.track_instruments(score, instrument, track_instruments)
        if not any(track.notes and not track.is_drum for track in score.tracks):
            raise MididdspError("the MIDI file has no melodic notes (only drums or empty tracks)")
        clock = {"prior": 0.0, "generator": 0.0, "synthesizer": 0.0, "reverb": 0.0, "mix": 0.0}
        work = {"generator_frames": 0, "synthesizer_frames": 0, "reverb_blocks": 0}
        started = time.perf_counter()
        if expression is None:
            expression = self.expression(score, seed, temperature, instrument, track_instruments)
        clock["prior"] += time.perf_counter() - started
        voice_audio = self.render_voices(score, expression, seed, instrument, track_instruments, reverb=reverb,
                                         sparse=sparse, progress=progress, work=work, clock=clock,
                                         processes=processes)
        result = self.mix_voices(score, voice_audio, reverb=reverb, sample_rate=sample_rate, stems=stems, work=work,
                                 clock=clock)
        result.messages[:0] = messages
        if timings is not None:
            timings.update(clock)
        return result

    def render_voices(self, score, expression, seed: int | None = 0, instrument: str | None = None,
                      track_instruments: dict[int, str] | None = None, reverb: bool = True, sparse: bool = True,
                      only=None, progress: bool = False, work: dict | None = None,
                      clock: dict | None = None, processes: int = 1) -> dict[tuple[int, int], VoiceAudio]:
        """The dry synthesis of each voice, ``{(track, voice): VoiceAudio}`` (of the voices in ``only``, a set of
        ``(track, voice)``, when given): the part of :meth:`render` that one voice's notes, expression and instrument
        decide. :meth:`mix_voices` of every voice's result is :meth:`render`, bit for bit; so a caller that changes
        a few notes (the editor) renders only their voices again and mixes them with the others it kept.
        ``work`` and ``clock``: dicts that receive the counts and seconds :meth:`render` reports. The voices run on
        one thread each (:func:`mididdsp.parallel.one_thread`), on :func:`mididdsp.parallel.threads` threads in this
        process (:func:`mididdsp.parallel.in_threads`), or with ``processes`` > 1 in that many forked copies of it
        (:func:`mididdsp.parallel.in_processes`; Linux, and only from a process whose other threads hold no lock:
        ``mididdsp render`` asks for it); the same bits."""
        import time
        import numpy as np

        from mididdsp.dsp.constants import n_frames as count_frames
        from mididdsp.parallel import in_processes
        from mididdsp.synthesis import spans as spanning
        from mididdsp.synthesis.settings import SILENCE_DB, receptive_field

        work = {} if work is None else work
        for key in ("generator_frames", "synthesizer_frames"):
            work.setdefault(key, 0)
        clock = {} if clock is None else clock
        for key in ("generator", "synthesizer"):
            clock.setdefault(key, 0.0)
        names, _ = self.track_instruments(score, instrument, track_instruments)
        voices = self.voices(score)
        if only is not None:
            only = {(int(t), int(v)) for t, v in only}
        rows = match_expression(expression, voices, self.ranges)
        n_samples = self._render_samples(voices)
        generator = self.generator
        hop = generator.hop_size
        frames = count_frames(n_samples)
        # spans closer than two receptive fields are computed as one: apart, their context would be computed twice
        context = receptive_field(generator.config) + 1
        performances: dict[int, dict] = {}
        wanted = [(t, v, notes) for t, v, notes in voices if only is None or (t, v) in only]
        for t, _, _ in wanted:
            if t not in performances:
                performance = score.tracks[t].control_frames(frames)
                performances[t] = {"bend": np.power(2.0, performance["pitch_bend"] / 12.0).astype(np.float32),
                                   "gain": midi_volume_gain(performance["cc7"], performance["cc11"]),
                                   "cc1": performance["cc1"]}

        def one_voice(t: int, v: int, notes: list):
            voice_work = {"generator_frames": 0, "synthesizer_frames": 0}
            voice_clock = {"generator": 0.0, "synthesizer": 0.0}
            name = names[t]
            instrument_id = self.instruments[name]
            performance = performances[t]
            note_array = np.array([[n.start, n.end, n.pitch, n.velocity] for n in notes], np.float32)
            controls_in = apply_modulation(rows[(t, v)], note_array, performance["cc1"])
            voice_seed = None if seed is None else (int(seed) * 1_000_003 + t * 1009 + v) % (1 << 62)
            started = time.perf_counter()
            if sparse:
                tail = generator.release_frames(instrument_id, RELEASE_BOUND_DB)
                voice_spans = spanning.note_spans(note_array, frames, tail, 2 * context)
            else:
                voice_spans = [(0, frames)]
            generated = generator.spans(note_array, controls_in, instrument_id, frames, voice_spans, voice_seed,
                                        counter=voice_work)
            silences = [spanning.silent_frames(c, SILENCE_DB) for c in generated]
            if sparse and any(stop < frames and not (harmonic[-1] and noise[-1])
                              for (_, stop), (harmonic, noise) in zip(voice_spans, silences)):
                # a note ended above RELEASE_BOUND_DB, so its release outlasts its span: compute every frame
                voice_spans = [(0, frames)]
                generated = generator.spans(note_array, controls_in, instrument_id, frames, voice_spans, voice_seed,
                                            counter=voice_work)
                silences = [spanning.silent_frames(c, SILENCE_DB) for c in generated]
            voice_clock["generator"] += time.perf_counter() - started
            started = time.perf_counter()
            segments: list[tuple[int, np.ndarray]] = []
            curves: list[tuple[int, np.ndarray, np.ndarray]] = []
            for (span_first, span_stop), controls, (harmonic_silent, noise_silent) in zip(voice_spans, generated,
                                                                                       silences):
                controls = spanning.gate_silence(controls, harmonic_silent, noise_silent,
                                                 performance["gain"][span_first:span_stop])
                controls["f0_hz"] = controls["f0_hz"] * performance["bend"][span_first:span_stop]
                curves.append((span_first, controls["f0_hz"],
                               20 * np.log10(np.maximum(controls["amplitude"], np.float32(1e-5)))))
                if not reverb:  # the dry render at the level of the wet one, not the 15-20 dB the reverb carries
                    controls = self._dry_at_wet_level(controls, instrument_id)
                silent = harmonic_silent & noise_silent
                for run_first, run_stop in spanning.sounding_runs(silent):
                    first_sample = (span_first + run_first) * hop
                    audio = spanning.synthesize_run(
                        spanning.run_controls(controls, run_first, run_stop, silent), first_sample,
                        0 if voice_seed is None else voice_seed, hop, generator.sample_rate, generator.nyquist_fade,
                        generator.amplitude_upsampling)
                    voice_work["synthesizer_frames"] += run_stop - run_first
                    count = min(len(audio), n_samples - first_sample)
                    segments.append((first_sample, audio[:count]))
            voice_clock["synthesizer"] += time.perf_counter() - started
            return VoiceAudio(t, v, name, segments, curves), voice_work, voice_clock

        # no bar at all unless asked: even a disabled tqdm makes its lock, a named semaphore in a batch worker
        # (spawned), which the worker leaks, and Python then warns of, when it is killed
        bar = None
        if progress:
            from tqdm import tqdm  # imported only then: 5 ms of a short render's start

            bar = tqdm(total=len(wanted), desc="render", unit="voice", file=sys.stderr)
        sounding = [sum(n.end - n.start for n in notes) for _, _, notes in wanted]  # seconds: the work's measure
        done: dict[int, VoiceAudio] = {}
        for index, (audio, voice_work, voice_clock) in in_processes(one_voice, wanted, sounding, processes):
            done[index] = audio
            for key, value in voice_work.items():
                work[key] += value
            for key, value in voice_clock.items():
                clock[key] += value
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return {(audio.track, audio.voice): audio for audio in (done[index] for index in range(len(wanted)))}

    def _dry_at_wet_level(self, controls: dict, instrument: int) -> dict:
        """One voice's controls at the level their synthesis reads through the instrument's reverb, for a render
        without it (:meth:`mididdsp.dsp.DDSPSynth.dry_at_wet_level`: a learned reverb carries 15-20 dB of the
        level). The synthesizer's loudness model is torch's: this imports torch, for ``reverb=False`` only."""
        import numpy as np
        import torch

        from mididdsp.dsp.constants import CONTROL_NAMES

        tensors = {name: torch.from_numpy(np.ascontiguousarray(controls[name]))[None].to(self.device)
                   for name in CONTROL_NAMES}
        with torch.no_grad():
            matched = self.torch_module("generator").synth.dry_at_wet_level(
                tensors, torch.tensor([instrument], device=self.device))
        return {**controls, **{name: matched[name][0].cpu().numpy() for name in CONTROL_NAMES}}

    def _render_samples(self, voices) -> int:
        """Samples of a render of these voices (their last note's end + :data:`TAIL_S`); refuses absurd lengths."""
        from mididdsp.dsp import SAMPLE_RATE
        from mididdsp.errors import MididdspError

        if not voices:
            raise MididdspError("the MIDI file has no melodic notes (only drums or empty tracks)")
        end = max(n.end for _, _, notes in voices for n in notes)
        if end > MAX_RENDER_S:
            raise MididdspError(f"the MIDI file's notes run to {end / 60:.1f} minutes; expected at most "
                                f"{MAX_RENDER_S / 60:.0f} (an absurd tempo or a corrupt file?)")
        return int(math.ceil((end + TAIL_S) * SAMPLE_RATE))

    def mix_voices(self, score, voice_audio: dict, reverb: bool = True, sample_rate: int = 16000,
                   stems: bool = True, wet_cache: dict | None = None, work: dict | None = None,
                   clock: dict | None = None) -> Rendered:
        """The render of ``score`` from every voice's dry synthesis (:meth:`render_voices`): the dry voices are
        summed on buses (per track with ``stems``, else per instrument) in the score's voice order, each bus is
        reverberated once, the buses are mixed, and a mix that would clip is scaled down.

        ``wet_cache``: a dict the caller keeps between calls; a bus whose voices are the same objects as last time
        takes its reverberated audio from it instead of computing it again (the editor's re-mix after an edit)."""
        import time
        import warnings as warning_filter
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        from mididdsp.audio import resample
        from mididdsp.dsp.constants import SAMPLE_RATE
        from mididdsp.errors import MididdspError
        from mididdsp.parallel import ordered_map, threads as thread_count
        from mididdsp.synthesis.spans import ReverbBus, mixed_blocks

        work = {} if work is None else work
        work.setdefault("reverb_blocks", 0)
        clock = {} if clock is None else clock
        for key in ("reverb", "mix"):
            clock.setdefault(key, 0.0)
        with warning_filter.catch_warnings():
            warning_filter.simplefilter("ignore")  # render_voices has warned about dropped voices already
            voices = self.voices(score)
        n_samples = self._render_samples(voices)
        started = time.perf_counter()
        members: dict = {}      # bus key -> the VoiceAudio summed on it, in voice order
        for t, v, _ in voices:
            if (t, v) not in voice_audio:
                raise MididdspError(f"mix_voices: no audio for track {t}, voice {v}; render every voice first")
            voice = voice_audio[(t, v)]
            members.setdefault(t if stems else voice.instrument, []).append(voice)
        use_reverb = reverb and self.generator.reverb_response is not None
        block = 8 * int(round(self.generator.config.reverb_seconds * SAMPLE_RATE))
        # the editor's buses keep their block spectra (mixed again after every edit); stems transform each bus's
        # blocks once more for the mix rather than hold every bus's spectra at once (20 tracks of 10 minutes: 0.9 GB)
        keep = wet_cache is not None
        buses: dict = {}
        for key, bus_voices in members.items():
            cached = wet_cache.get(key) if wet_cache is not None else None
            if cached is not None and len(cached[0]) == len(bus_voices) and all(
                    a is b for a, b in zip(cached[0], bus_voices)) and cached[2] == (use_reverb, n_samples):
                buses[key] = cached[1]
                continue
            impulse_response = None
            if use_reverb:
                impulse_response = self.generator.impulse_response(self.instruments[bus_voices[0].instrument])
            segments = [segment for voice in bus_voices for segment in voice.segments]
            buses[key] = ReverbBus(segments, n_samples, block, impulse_response, keep)
            if wet_cache is not None:
                wet_cache[key] = (tuple(bus_voices), buses[key], (use_reverb, n_samples))
        if wet_cache is not None:
            for key in [key for key in wet_cache if key not in members]:
                del wet_cache[key]
        mix = np.zeros(n_samples, np.float32)
        out_stems = {}
        threads = thread_count()
        # the buses in the score's voice order (the order of the mix's sum), the blocks on every core (scipy's FFT
        # and numpy release the GIL; each block's bits do not depend on its thread)
        with ThreadPoolExecutor(threads, thread_name_prefix="mididdsp-reverb") as pool:
            map_blocks = (lambda function, items: ordered_map(function, items, pool, 2 * threads)
                          ) if threads > 1 else map
            for first, audio in mixed_blocks(list(buses.values()), map_blocks, work):
                mix[first:first + len(audio)] = audio
            clock["reverb"] += time.perf_counter() - started
            started = time.perf_counter()
            for key in sorted(buses) if stems else ():
                out_stems[key] = stem = np.zeros(n_samples, np.float32)
                for first, audio in mixed_blocks([buses[key]], map_blocks):
                    stem[first:first + len(audio)] = audio
        clock["mix"] += time.perf_counter() - started
        messages: list[str] = []
        peak = float(np.abs(mix).max()) if mix.size else 0.0
        gain_db = 0.0
        if peak > HEADROOM_PEAK:
            factor = HEADROOM_PEAK / peak
            gain_db = 20 * math.log10(factor)
            mix *= factor
            for stem in out_stems.values():
                stem *= factor
            messages.append(f"the mix peaked at {20 * math.log10(peak):+.1f} dBFS: scaled by {gain_db:.1f} dB to "
                            f"avoid clipping")
        if not np.isfinite(mix).all():
            raise MididdspError("the render produced non-finite samples (a bug; please report the MIDI file)")
        out_audio = mix
        if sample_rate != SAMPLE_RATE:
            out_audio = resample(out_audio, SAMPLE_RATE, sample_rate)
            out_stems = {k: resample(s, SAMPLE_RATE, sample_rate) for k, s in out_stems.items()}
        return Rendered(out_audio, int(sample_rate), out_stems, gain_db, messages, work)


def match_expression(expression, voices, ranges) -> dict:
    """{(track, voice): [N, 8] float32 controls (six scaled, vibrato_rate_hz, level_offset_db: the generator's
    input)} from a NoteExpression that must describe exactly these voices; MididdspError naming the first row (or
    missing note) that differs."""
    import numpy as np

    from mididdsp.errors import MididdspError
    from mididdsp.expression.names import CONTROL_NAMES, LEVEL_OFFSET

    wanted = {(t, v, i): note for t, v, notes in voices for i, note in enumerate(notes)}
    # the columns read once as arrays (row by row, the table's dicts cost a render a second per 10 000 notes)
    keys = zip(expression.track.tolist(), expression.voice.tolist(), expression.note_index.tolist())
    pitches, starts = expression.pitch.tolist(), expression.start.tolist()
    values = np.stack([getattr(expression, name) for name in CONTROL_NAMES]
                      + [expression.vibrato_rate_hz, getattr(expression, LEVEL_OFFSET)], axis=1).astype(np.float32)
    found: dict[tuple[int, int, int], int] = {}  # note -> its row
    for row, key in enumerate(keys):
        key = tuple(int(k) for k in key)
        note = wanted.get(key)
        if note is None:
            raise MididdspError(f"expression row {row} (track {key[0]}, voice {key[1]}, note {key[2]}): no such note "
                                f"in the MIDI file")
        if int(pitches[row]) != note.pitch or abs(float(starts[row]) - note.start) > 1e-3:
            raise MididdspError(f"expression row {row} (track {key[0]}, voice {key[1]}, note {key[2]}): pitch "
                                f"{int(pitches[row])} at {float(starts[row]):.3f} s, but the MIDI has pitch "
                                f"{note.pitch} at {note.start:.3f} s")
        found[key] = row
    missing = [key for key in wanted if key not in found]
    if missing:
        t, v, i = missing[0]
        raise MididdspError(f"the expression table has no row for track {t}, voice {v}, note {i} "
                            f"({len(missing)} notes missing); expected one row per note of the MIDI file")
    return {(t, v): values[[found[(t, v, i)] for i in range(len(notes))]] for t, v, notes in voices}


def load_model(directory: str | Path | None = None, device: str = "cpu") -> MidiModel:
    """A MIDI model directory (default: the shipped one) -> :class:`MidiModel`. ModelError naming the directory
    when it is missing or broken. Nothing is downloaded, and torch is not imported: the render runs on the CPU
    (``device`` is where :meth:`MidiModel.torch_module` puts the torch modules)."""
    from mididdsp.errors import ModelError
    from mididdsp.expression.prior_inference import PriorInference
    from mididdsp.synthesis.inference import GeneratorInference

    directory = Path(directory) if directory is not None else PRETRAINED_MIDI
    if not directory.is_dir():
        hint = " (rebuild it with `make model-midi`)" if directory == PRETRAINED_MIDI else ""
        raise ModelError(f"{directory}: no such MIDI model directory{hint}; expected a folder with generator/ and "
                         f"prior/ model directories")
    for part in ("generator", "prior"):
        if not (directory / part).is_dir():
            raise ModelError(f"{directory}: not a MIDI model ({part}/ is missing; expected generator/ and prior/)")
    # the inference models: numpy and the compiled kernels, no torch (MidiModel.torch_module loads torch's)
    generator = GeneratorInference.load(directory / "generator")
    prior = PriorInference.load(directory / "prior")
    return MidiModel(generator, prior, directory, device)
