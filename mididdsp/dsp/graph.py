"""The DDSP synthesizer: harmonic + filtered noise -> reverb, with named, inspectable outputs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mididdsp.dsp.constants import CONTROL_NAMES
from mididdsp.dsp.core import DB_FLOOR, SAMPLE_RATE
from mididdsp.dsp.effects import ExponentialDecayReverb, LearnedReverb, apply_reverb, reverb_power_gain
from mididdsp.dsp.processors import (FilteredNoiseSynth, HarmonicSynth, match_loudness, scale_level,
                                     synthesis_loudness_power)
from mididdsp.dsp.spectral import compute_loudness
from mididdsp.dsp.synths import filtered_noise_causal


class DDSPSynth(nn.Module):
    """Harmonic synth + filtered noise, summed, then an optional reverb.

    ``forward(outputs, n_samples)`` takes raw network outputs (``amplitude`` [B, T, 1], ``harmonic_distribution``
    [B, T, n_harmonics], ``noise_magnitudes`` [B, T, n_bands] and ``f0_hz`` [B, T]) and returns a dict with the
    controls and the signals ``harmonic``, ``noise``, ``dry`` and ``audio`` ([B, n_samples]).
    ``synthesize(controls, n_samples)`` starts from controls (for editing), and ``render`` does the same in chunks
    with carried state, for any length with bounded memory.

    Args:
        reverb: ``"learned"`` (FIR per instrument), ``"exponential"`` (decaying noise) or ``None``.
        reverb_seconds: length of the reverb impulse response.
    """

    def __init__(self, n_harmonics: int = 60, n_noise_bands: int = 65, sample_rate: int = SAMPLE_RATE,
                 reverb: str | None = "learned", reverb_seconds: float = 3.0, n_instruments: int = 1):
        super().__init__()
        self.sample_rate = sample_rate
        self.harmonic = HarmonicSynth(n_harmonics, sample_rate)
        self.noise = FilteredNoiseSynth(n_noise_bands, sample_rate)
        self.hop_size = self.harmonic.hop_size
        n_taps = int(round(reverb_seconds * sample_rate))
        if reverb == "learned":
            self.reverb = LearnedReverb(n_taps, n_instruments)
        elif reverb == "exponential":
            self.reverb = ExponentialDecayReverb(n_taps, n_instruments)
        elif reverb is None:
            self.reverb = None
        else:
            raise ValueError(f"unknown reverb {reverb!r}; expected 'learned', 'exponential' or None")

    def get_controls(self, outputs: dict[str, torch.Tensor], instrument: torch.Tensor | None = None,
                     reverb: bool = True) -> dict[str, torch.Tensor]:
        """Raw network outputs -> controls (see the class docstring for names and shapes).

        With ``level_db`` [B, T] among the outputs, the amplitude and noise are scaled so that the synthesis reads
        that loudness (:func:`mididdsp.dsp.processors.match_loudness`): through the reverb of ``instrument`` [B]
        (steady state) with ``reverb``, or dry without it (so that a dry rendering is not quieter by the reverb's
        gain).
        """
        controls = self.harmonic.get_controls(outputs["amplitude"], outputs["harmonic_distribution"], outputs["f0_hz"])
        controls.update(self.noise.get_controls(outputs["noise_magnitudes"]))
        level_db = outputs.get("level_db")
        if level_db is None:
            return controls
        reverb_gain = None
        if reverb and self.reverb is not None:
            reverb_gain = reverb_power_gain(self.reverb.get_impulse_response(instrument), self.sample_rate)
        return match_loudness(controls, level_db, self.sample_rate, reverb_gain)

    def dry_at_wet_level(self, controls: dict[str, torch.Tensor], instrument: torch.Tensor | None = None
                         ) -> dict[str, torch.Tensor]:
        """Controls whose dry synthesis reads the loudness their synthesis through the reverb of ``instrument``
        reads (steady state, frame by frame; :func:`~mididdsp.dsp.processors.synthesis_loudness_power`).

        A learned reverb also works as a body filter and can carry 15-20 dB of the level; controls made for the
        wet synthesis (a generator's) would otherwise play that much quieter without it. Unchanged without a
        reverb."""
        if self.reverb is None:
            return controls
        terms = (controls["f0_hz"], controls["amplitude"], controls["harmonic_distribution"],
                 controls["noise_magnitudes"], self.sample_rate)
        wet = synthesis_loudness_power(*terms, reverb_power_gain(self.reverb.get_impulse_response(instrument),
                                                                 self.sample_rate))
        return scale_level(controls, torch.sqrt(wet / synthesis_loudness_power(*terms).clamp_min(1e-30)))

    def synthesize(self, controls: dict[str, torch.Tensor], n_samples: int, instrument: torch.Tensor | None = None,
                   reverb: bool = True, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Controls -> {"harmonic", "noise", "dry", "audio"}, each [batch, n_samples]."""
        harmonic = self.harmonic.get_signal(controls["f0_hz"], controls["amplitude"],
                                            controls["harmonic_distribution"], n_samples)
        noise_audio = self.noise.get_signal(controls["noise_magnitudes"], n_samples, noise, generator)
        dry = harmonic + noise_audio
        audio = dry
        if reverb and self.reverb is not None:
            audio = apply_reverb(dry, self.reverb.get_impulse_response(instrument))
        return {"harmonic": harmonic, "noise": noise_audio, "dry": dry, "audio": audio}

    def forward(self, outputs: dict[str, torch.Tensor], n_samples: int, instrument: torch.Tensor | None = None,
                reverb: bool = True) -> dict[str, torch.Tensor]:
        controls = self.get_controls(outputs, instrument, reverb)
        return {**controls, **self.synthesize(controls, n_samples, instrument, reverb)}

    @torch.no_grad()
    def correct_loudness(self, controls: dict[str, torch.Tensor], level_db: torch.Tensor, n_samples: int,
                         instrument: torch.Tensor | None = None, reverb: bool = True, noise: torch.Tensor | None = None,
                         passes: int = 2, max_boost_db: float = 6.0, max_cut_db: float = 3.0
                         ) -> dict[str, torch.Tensor]:
        """Closed-loop loudness: render ``controls``, measure the audio's loudness, and move each frame's gain
        (amplitude and noise together) by the dB it misses ``level_db`` [B, T]; ``passes`` times.

        :func:`~mididdsp.dsp.processors.match_loudness` is exact for controls held steady over the 32 ms analysis
        window and for a reverb that has filled; at onsets and releases neither holds (the input's loudness curve
        is itself window-smoothed, so a matched attack is smoothed twice, and a reverb tail runs on after a
        release). Measuring the rendered audio takes both into account. Each pass's correction is smoothed over
        5 frames (20 ms: frame-to-frame jitter of the measurement is not imprinted on the envelope), and the total
        stays within ``+max_boost_db`` / ``-max_cut_db``: cutting a release further lets the reverb tail of the
        notes before it take over, which CREPE then reads as the pitch (7 held-out recordings: F0 L1 0.059 -> 0.065
        unbounded, 0.061 with these bounds; loudness L1 1.43 -> 0.79 and 0.90 dB). Frames whose wanted level is at the
        loudness floor are left as they are. Render with the same ``noise`` [B, >= n_samples] afterwards for
        the output to read what was measured (without it, one excitation is drawn for all passes).

        Args:
            controls: from :meth:`get_controls`, [B, T, ...].
            level_db: [B, T] wanted loudness, dB (:func:`mididdsp.dsp.compute_loudness` of the input).
        Returns:
            controls with ``amplitude`` and ``noise_magnitudes`` rescaled.
        """
        frames = level_db.shape[1]
        if noise is None:
            noise = (torch.rand(level_db.shape[0], n_samples, generator=torch.Generator().manual_seed(0)) * 2 - 1
                     ).to(level_db)
        sounding = level_db > DB_FLOOR + 1.0
        smoothing = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0], dtype=level_db.dtype, device=level_db.device) / 9.0
        gain_db = torch.zeros_like(level_db)
        corrected = controls
        for _ in range(passes):
            audio = self.render(corrected, n_samples, instrument, reverb, noise=noise)
            measured = compute_loudness(audio)[:, :frames]
            if measured.shape[1] < frames:  # a short render: hold the last frame
                measured = F.pad(measured[:, None], (0, frames - measured.shape[1]), mode="replicate")[:, 0]
            step = torch.where(sounding, level_db - measured, torch.zeros_like(level_db))
            step = F.conv1d(F.pad(step[:, None], (2, 2), mode="replicate"), smoothing[None, None])[:, 0]
            step = torch.where(sounding, step, torch.zeros_like(step))
            gain_db = (gain_db + step).clamp(-max_cut_db, max_boost_db)
            corrected = scale_level(controls, torch.pow(10.0, gain_db / 20.0))
        return corrected

    @torch.no_grad()
    def render(self, controls: dict[str, torch.Tensor], n_samples: int, instrument: torch.Tensor | None = None,
               reverb: bool = True, chunk_seconds: float = 1.0, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Controls -> audio [batch, n_samples], synthesised chunk by chunk with carried state.

        Equal (to float rounding) to ``synthesize(...)["audio"]`` with the same ``noise``; the working memory is
        bounded by the chunk length. For input that arrives in pieces use :class:`StreamingRenderer` directly.
        """
        stream = StreamingRenderer(self, instrument, reverb, noise=noise, generator=generator)
        frames_per_chunk = max(1, int(chunk_seconds * self.sample_rate) // self.hop_size)
        total_frames = controls["f0_hz"].shape[1]
        pieces = [stream.push({name: controls[name][:, first:first + frames_per_chunk] for name in CONTROL_NAMES})
                  for first in range(0, total_frames, frames_per_chunk)]
        pieces.append(stream.finish(n_samples))
        return torch.cat(pieces, dim=1)


class StreamingRenderer:
    """Synthesise controls that arrive in consecutive pieces of frames, with carried state.

    ``push(controls)`` takes the next frames (dict of :data:`CONTROL_NAMES`, [batch, frames, ...]) and returns the
    audio that is final so far; ``finish(n_samples)`` returns the rest, so that everything returned adds up to
    ``n_samples`` samples equal to a one-piece ``DDSPSynth.synthesize``. Carried: the oscillator phase, the noise
    filters' overlap-add tail, the reverb tail, and the harmonic audio delayed to line up with the noise filters'
    linear-phase delay (the only latency, ``taps // 2`` samples).

    ``noise`` [batch, samples] fixes the excitation (for exact comparisons); otherwise it is drawn per piece.
    """

    def __init__(self, synth: DDSPSynth, instrument: torch.Tensor | None = None, reverb: bool = True,
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None):
        self.synth = synth
        self.hop = synth.hop_size
        self.taps = 2 * (synth.noise.n_bands - 1)
        self.delay = self.taps // 2
        use_reverb = reverb and synth.reverb is not None
        self.impulse_response = synth.reverb.get_impulse_response(instrument).detach() if use_reverb else None
        self.noise, self.generator = noise, generator
        self.last_frame: dict[str, torch.Tensor] | None = None  # closing frame of the previous piece
        self.phase = None
        self.noise_tail = self.harmonic_tail = self.reverb_tail = None
        self.samples_done = 0  # synthesised samples (true time, before the output delay)
        self.emitted = 0       # samples returned so far
        # Reverb works on blocks of at least twice its length: one FFT convolution per block instead of one per
        # (possibly small) piece keeps its cost per sample low.
        self.reverb_block = 2 * self.impulse_response.shape[-1] if self.impulse_response is not None else 0
        self.pending: list[torch.Tensor] = []
        self.reverb_spectra: dict = {}  # the fixed impulse response's spectrum per FFT size, computed once

    def _segments(self, frames: dict[str, torch.Tensor]) -> torch.Tensor:
        """Synthesise the segments between consecutive frames of ``frames`` (k frames -> k - 1 segments)."""
        length = (frames["f0_hz"].shape[1] - 1) * self.hop
        batch = frames["f0_hz"].shape[0]
        if self.noise_tail is None:
            self.noise_tail = frames["f0_hz"].new_zeros(batch, self.taps - 1)
            self.harmonic_tail = frames["f0_hz"].new_zeros(batch, self.delay)
        harmonic, self.phase = self.synth.harmonic.get_signal(frames["f0_hz"], frames["amplitude"],
                                                              frames["harmonic_distribution"], length, self.phase, True)
        if self.noise is not None:
            noise = self.noise[:, self.samples_done:self.samples_done + length]
            noise = F.pad(noise, (0, length - noise.shape[1]))
        else:
            noise = torch.rand(batch, length, generator=self.generator, device=harmonic.device) * 2 - 1
        causal = filtered_noise_causal(frames["noise_magnitudes"], noise, self.hop, self.taps)
        causal = torch.cat([causal[:, :self.taps - 1] + self.noise_tail, causal[:, self.taps - 1:]], dim=1)
        self.noise_tail = causal[:, length:]
        harmonic = torch.cat([self.harmonic_tail, harmonic], dim=1)
        self.harmonic_tail = harmonic[:, length:]
        dry = harmonic[:, :length] + causal[:, :length]  # true time [done - delay, done + length - delay)
        if self.samples_done == 0:
            dry[:, :self.delay] = 0.0  # before time zero: the filters' ramp-up, which the one-piece render cuts off
        self.samples_done += length
        return self._wet(dry)

    def _wet(self, dry: torch.Tensor, flush: bool = False) -> torch.Tensor:
        if self.impulse_response is None:
            return dry
        self.pending.append(dry)
        if not flush and sum(piece.shape[1] for piece in self.pending) < self.reverb_block:
            return dry[:, :0]
        block, self.pending = torch.cat(self.pending, dim=1), []
        wet, self.reverb_tail = apply_reverb(block, self.impulse_response, self.reverb_tail, return_tail=True,
                                             spectra=self.reverb_spectra)
        return wet

    def _emit(self, audio: torch.Tensor, limit: int | None = None) -> torch.Tensor:
        start = max(0, self.delay - self.emitted)  # the first `delay` samples lie before time zero
        self.emitted += audio.shape[1]
        audio = audio[:, start:]
        return audio if limit is None else audio[:, :limit]

    @torch.no_grad()
    def push(self, controls: dict[str, torch.Tensor]) -> torch.Tensor:
        frames = {name: controls[name] for name in CONTROL_NAMES}
        if self.last_frame is not None:
            frames = {name: torch.cat([self.last_frame[name], frames[name]], dim=1) for name in CONTROL_NAMES}
        self.last_frame = {name: frames[name][:, -1:] for name in CONTROL_NAMES}
        if frames["f0_hz"].shape[1] < 2:
            return frames["f0_hz"].new_zeros(frames["f0_hz"].shape[0], 0)
        return self._emit(self._segments(frames))

    @torch.no_grad()
    def finish(self, n_samples: int) -> torch.Tensor:
        """The remaining audio, so that the total returned is ``n_samples`` (last frame held if frames run short)."""
        if self.last_frame is None:
            raise ValueError("finish() before any push()")
        pieces = []
        missing = math.ceil(max(0, n_samples - self.samples_done) / self.hop)
        if missing:
            held = {name: self.last_frame[name].expand(-1, missing + 1, *self.last_frame[name].shape[2:])
                    for name in CONTROL_NAMES}
            pieces.append(self._segments(held))
        pieces.append(self._wet(self.harmonic_tail + self.noise_tail[:, :self.delay], flush=True))
        already = max(0, self.emitted - self.delay)
        return self._emit(torch.cat(pieces, dim=1), limit=max(0, n_samples - already))
