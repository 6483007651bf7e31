"""The DDSP synthesizer: harmonic + filtered noise -> reverb, with named, inspectable outputs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mididdsp.dsp.core import SAMPLE_RATE
from mididdsp.dsp.effects import ExponentialDecayReverb, LearnedReverb, apply_reverb
from mididdsp.dsp.processors import FilteredNoiseSynth, HarmonicSynth
from mididdsp.dsp.synths import filtered_noise_causal

CONTROL_NAMES = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")


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

    def get_controls(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw network outputs -> controls (see the class docstring for names and shapes)."""
        controls = self.harmonic.get_controls(outputs["amplitude"], outputs["harmonic_distribution"], outputs["f0_hz"])
        controls.update(self.noise.get_controls(outputs["noise_magnitudes"]))
        return controls

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
        controls = self.get_controls(outputs)
        return {**controls, **self.synthesize(controls, n_samples, instrument, reverb)}

    @torch.no_grad()
    def render(self, controls: dict[str, torch.Tensor], n_samples: int, instrument: torch.Tensor | None = None,
               reverb: bool = True, chunk_seconds: float = 1.0, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Controls -> audio [batch, n_samples], synthesised chunk by chunk with carried state.

        Equal (to float rounding) to ``synthesize(...)["audio"]`` with the same ``noise``; memory is bounded by
        the chunk length, not the piece. The noise filters' linear-phase delay is absorbed by delaying the
        harmonic part by the same amount inside the loop.
        """
        hop = self.hop_size
        f0_hz, amplitude = controls["f0_hz"], controls["amplitude"]
        distribution, magnitudes = controls["harmonic_distribution"], controls["noise_magnitudes"]
        batch = f0_hz.shape[0]
        taps = 2 * (magnitudes.shape[-1] - 1)
        delay = taps // 2
        n_segments = math.ceil(n_samples / hop)
        padded_length = n_segments * hop

        def hold(frames):  # pad frame signals so every segment has its closing frame
            missing = n_segments + 1 - frames.shape[1]
            return torch.cat([frames, frames[:, -1:].expand(-1, missing, *frames.shape[2:])], 1) if missing > 0 else frames

        f0_hz, amplitude, distribution, magnitudes = map(hold, (f0_hz, amplitude, distribution, magnitudes))
        if noise is None:
            noise = torch.rand(batch, padded_length, generator=generator, device=f0_hz.device) * 2 - 1
        noise = F.pad(noise[:, :n_samples], (0, padded_length - min(n_samples, noise.shape[1])))
        impulse_response = self.reverb.get_impulse_response(instrument) if reverb and self.reverb is not None else None

        segments_per_chunk = max(1, int(chunk_seconds * self.sample_rate) // hop)
        phase = None
        noise_tail = f0_hz.new_zeros(batch, taps - 1)
        harmonic_tail = f0_hz.new_zeros(batch, delay)  # harmonic audio still waiting for its noise to catch up
        reverb_tail = None
        pieces = []

        def emit(dry):
            nonlocal reverb_tail
            if impulse_response is None:
                pieces.append(dry)
            else:
                wet, reverb_tail = apply_reverb(dry, impulse_response, reverb_tail, return_tail=True)
                pieces.append(wet)

        for first in range(0, n_segments, segments_per_chunk):
            last = min(n_segments, first + segments_per_chunk)
            frames, samples = slice(first, last + 1), slice(first * hop, last * hop)
            length = (last - first) * hop
            harmonic, phase = self.harmonic.get_signal(f0_hz[:, frames], amplitude[:, frames],
                                                       distribution[:, frames], length, phase, True)
            causal = filtered_noise_causal(magnitudes[:, frames], noise[:, samples], hop, taps)
            causal = torch.cat([causal[:, :taps - 1] + noise_tail, causal[:, taps - 1:]], dim=1)
            noise_tail = causal[:, length:]
            harmonic = torch.cat([harmonic_tail, harmonic], dim=1)
            harmonic_tail = harmonic[:, length:]
            dry = harmonic[:, :length] + causal[:, :length]  # true time [first*hop - delay, last*hop - delay)
            if first == 0:
                dry[:, :delay] = 0.0  # before time zero: the filters' ramp-up, which the one-piece render cuts off
            emit(dry)
        emit(harmonic_tail + noise_tail[:, :delay])
        return torch.cat(pieces, dim=1)[:, delay:delay + n_samples]
