"""Synthesizer modules, each split in two steps so controls can be inspected and edited between them:

``get_controls``: raw network outputs -> controls in physical units (scaling, constraints, Nyquist masking);
``get_signal``:   controls -> audio.
"""
from __future__ import annotations

import torch
from torch import nn

from mididdsp.dsp.core import SAMPLE_RATE, exp_sigmoid, normalize_harmonic_distribution
from mididdsp.dsp.synths import default_hop_size, filtered_noise, harmonic_synthesis


class HarmonicSynth(nn.Module):
    """Harmonic oscillator bank.

    Controls:
        f0_hz: [batch, frames] Hz.
        amplitude: [batch, frames] linear, [1e-7, 2] when made by ``get_controls``.
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

    def get_controls(self, amplitude: torch.Tensor, harmonic_distribution: torch.Tensor, f0_hz: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """Raw outputs (any real numbers) [batch, frames, 1] and [batch, frames, n_harmonics] -> controls."""
        f0_hz = f0_hz.squeeze(-1) if f0_hz.dim() == 3 else f0_hz
        amplitude = exp_sigmoid(amplitude).squeeze(-1)
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
        noise_magnitudes: [batch, frames, n_bands] linear gains at n_bands frequencies from 0 Hz to Nyquist.
    """

    def __init__(self, n_bands: int = 65, sample_rate: int = SAMPLE_RATE, hop_size: int | None = None,
                 initial_bias: float = -5.0):
        super().__init__()
        self.n_bands = n_bands
        self.sample_rate = sample_rate
        self.hop_size = hop_size or default_hop_size(sample_rate)
        # A negative bias makes training start with quiet noise, so the harmonic part learns first.
        self.initial_bias = initial_bias

    def get_controls(self, noise_magnitudes: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"noise_magnitudes": exp_sigmoid(noise_magnitudes + self.initial_bias)}

    def get_signal(self, noise_magnitudes: torch.Tensor, n_samples: int, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        return filtered_noise(noise_magnitudes, n_samples, self.hop_size, noise, generator=generator,
                              sample_rate=self.sample_rate)
