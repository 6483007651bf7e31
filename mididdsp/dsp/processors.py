"""Synthesizer modules, each split in two steps so controls can be inspected and edited between them:

``get_controls``: raw network outputs -> controls in physical units (scaling, constraints, Nyquist masking);
``get_signal``:   controls -> audio.

Level-relative outputs: given ``level_db`` [batch, frames] (the input's measured loudness), the amplitude and
noise magnitudes are a network's scaling times ``10 ** ((level_db + LEVEL_HEADROOM_DB) / 20)``. The output then
follows the input level by construction: 6 dB more in, 6 dB more out, whatever the network has learned.
"""
from __future__ import annotations

import torch
from torch import nn

from mididdsp.dsp.core import SAMPLE_RATE, exp_sigmoid, normalize_harmonic_distribution
from mididdsp.dsp.synths import default_hop_size, filtered_noise, harmonic_synthesis

# Level-relative scaling: exp_sigmoid reaches 2 (+6 dB), so an amplitude can reach 36 dB above the A-weighted
# loudness: room for low instruments, whose fundamentals the A-curve discounts by up to ~30 dB (tuba, contrabass).
LEVEL_HEADROOM_DB = 30.0
# Raw 0 then gives an amplitude ~2 dB above the loudness, near where treble instruments sit, so training starts
# at about the right level instead of 20 dB too loud.
LEVEL_AMPLITUDE_BIAS = -1.5


def level_gain(level_db: torch.Tensor) -> torch.Tensor:
    """[batch, frames] dB -> [batch, frames, 1] linear: the scale of level-relative controls."""
    return torch.pow(10.0, (level_db.unsqueeze(-1) + LEVEL_HEADROOM_DB) / 20.0)


class HarmonicSynth(nn.Module):
    """Harmonic oscillator bank.

    Controls:
        f0_hz: [batch, frames] Hz.
        amplitude: [batch, frames] linear, [1e-7, 2] when made by ``get_controls`` (times ``level_gain`` when
            given ``level_db``).
        harmonic_distribution: [batch, frames, n_harmonics], zero at/above Nyquist, sums to 1 per frame.
    """

    def __init__(self, n_harmonics: int = 60, sample_rate: int = SAMPLE_RATE, hop_size: int | None = None,
                 nyquist_fade: float = 0.05, amplitude_upsampling: str = "hann"):
        super().__init__()
        self.n_harmonics = n_harmonics
        self.sample_rate = sample_rate
        self.hop_size = hop_size or default_hop_size(sample_rate)
        self.nyquist_fade = nyquist_fade
        self.amplitude_upsampling = amplitude_upsampling

    def get_controls(self, amplitude: torch.Tensor, harmonic_distribution: torch.Tensor, f0_hz: torch.Tensor,
                     level_db: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs (any real numbers) [batch, frames, 1] and [batch, frames, n_harmonics] -> controls.

        ``level_db`` [batch, frames]: the amplitude is relative to it (module docstring).
        """
        f0_hz = f0_hz.squeeze(-1) if f0_hz.dim() == 3 else f0_hz
        if level_db is None:
            amplitude = exp_sigmoid(amplitude).squeeze(-1)
        else:
            amplitude = (exp_sigmoid(amplitude + LEVEL_AMPLITUDE_BIAS) * level_gain(level_db)).squeeze(-1)
        distribution = normalize_harmonic_distribution(exp_sigmoid(harmonic_distribution), f0_hz, self.sample_rate,
                                                       self.nyquist_fade)
        return {"f0_hz": f0_hz, "amplitude": amplitude, "harmonic_distribution": distribution}

    def get_signal(self, f0_hz: torch.Tensor, amplitude: torch.Tensor, harmonic_distribution: torch.Tensor,
                   n_samples: int, initial_phase: torch.Tensor | None = None, return_final_phase: bool = False):
        return harmonic_synthesis(f0_hz, amplitude, harmonic_distribution, n_samples, self.sample_rate, self.hop_size,
                                  initial_phase, self.amplitude_upsampling, self.nyquist_fade,
                                  return_final_phase=return_final_phase)


class FilteredNoiseSynth(nn.Module):
    """Noise through a time-varying linear-phase FIR filter.

    Controls:
        noise_magnitudes: [batch, frames, n_bands] linear gains at n_bands frequencies from 0 Hz to Nyquist
            (relative to ``level_gain(level_db)`` when ``get_controls`` is given ``level_db``).
    """

    def __init__(self, n_bands: int = 65, sample_rate: int = SAMPLE_RATE, hop_size: int | None = None,
                 initial_bias: float = -5.0):
        super().__init__()
        self.n_bands = n_bands
        self.sample_rate = sample_rate
        self.hop_size = hop_size or default_hop_size(sample_rate)
        # A negative bias makes training start with quiet noise, so the harmonic part learns first.
        self.initial_bias = initial_bias

    def get_controls(self, noise_magnitudes: torch.Tensor, level_db: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
        magnitudes = exp_sigmoid(noise_magnitudes + self.initial_bias)
        return {"noise_magnitudes": magnitudes if level_db is None else magnitudes * level_gain(level_db)}

    def get_signal(self, noise_magnitudes: torch.Tensor, n_samples: int, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        return filtered_noise(noise_magnitudes, n_samples, self.hop_size, noise, generator=generator,
                              sample_rate=self.sample_rate)
