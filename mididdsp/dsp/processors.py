"""Synthesizer modules, each split in two steps so controls can be inspected and edited between them:

``get_controls``: raw network outputs -> controls in physical units (scaling, constraints, Nyquist masking);
``get_signal``:   controls -> audio.

Loudness matching (:func:`match_loudness`): given ``level_db`` [batch, frames] (the input's measured A-weighted
loudness), one gain per frame scales the amplitude and the noise magnitudes together so that the synthesis reads
exactly that loudness in :func:`mididdsp.dsp.compute_loudness` (for controls held steady over the analysis
window, and through the reverb taken as the steady filter it is for a held note). A network then decides only the
timbre: the harmonic distribution, the noise spectrum, the balance of the two and the reverb's colour. The level
is the input's by construction: 6 dB more in, 6 dB more out, whatever the network has learned, and no learned
share can drift the level on audio unlike the training data.
"""
from __future__ import annotations

import torch
from torch import nn

from mididdsp.dsp.core import DB_FLOOR, SAMPLE_RATE, exp_sigmoid, grid_lookup, normalize_harmonic_distribution
from mididdsp.dsp.constants import AMPLITUDE_UPSAMPLING, NYQUIST_FADE
from mididdsp.dsp.spectral import sinusoid_loudness_weight
from mididdsp.dsp.synths import (NOISE_VARIANCE, default_hop_size, filtered_noise, filtered_noise_loudness_terms,
                                 harmonic_synthesis)

# The A-curve falls to -40 dB at 30 Hz. Counting every partial at least this much keeps a frame that is all
# subsonic (an f0 read in silence) from being given an enormous amplitude to reach its loudness.
MIN_LOUDNESS_WEIGHT = 1e-4


def synthesis_loudness_power(f0_hz: torch.Tensor, amplitude: torch.Tensor, harmonic_distribution: torch.Tensor,
                             noise_magnitudes: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                             filter_gain: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """The A-weighted mean square :func:`mididdsp.dsp.compute_loudness` reads from the synthesis of steady
    controls: ``amplitude**2 / 2 * sum(distribution_k**2 * w(k f0) * g(k f0))`` for the partials (``w``:
    :func:`mididdsp.dsp.spectral.sinusoid_loudness_weight`, at least ``MIN_LOUDNESS_WEIGHT``) plus the filtered
    noise's ``NOISE_VARIANCE * m Q m`` (:func:`mididdsp.dsp.synths.filtered_noise_loudness_terms`, each bin
    scaled by ``g``).

    Args:
        f0_hz, amplitude: [batch, frames] Hz and linear.
        harmonic_distribution: [batch, frames, n_harmonics], Nyquist-masked, summing to 1.
        noise_magnitudes: [batch, frames, n_bands] linear.
        filter_gain: ``g``, the power gain of a filter the sum passes through (the reverb, steady state), as
            ([batch or 1, bins] on a grid from 0 Hz, the grid's step in Hz); None for the dry synthesis.
    Returns:
        [batch, frames] mean square (linear power; ``10 * log10`` of it is the loudness in dB).
    """
    numbers = torch.arange(1, harmonic_distribution.shape[-1] + 1, dtype=f0_hz.dtype, device=f0_hz.device)
    frequency = f0_hz.detach().unsqueeze(-1) * numbers
    weight = sinusoid_loudness_weight(frequency, sample_rate).clamp_min(MIN_LOUDNESS_WEIGHT)
    terms = filtered_noise_loudness_terms(noise_magnitudes.shape[-1], sample_rate, dtype=noise_magnitudes.dtype,
                                          device=noise_magnitudes.device)
    if filter_gain is None:
        form = terms.sum(0).expand(noise_magnitudes.shape[0], -1, -1)
    else:
        gain, step_hz = filter_gain
        weight = weight * grid_lookup(gain, step_hz, frequency)
        bin_hz = sample_rate / (2.0 * (terms.shape[0] - 1))
        bin_frequency = torch.arange(terms.shape[0], device=gain.device, dtype=gain.dtype) * bin_hz
        bin_gain = grid_lookup(gain, step_hz, bin_frequency.expand(gain.shape[0], -1))
        form = torch.einsum("bk,kij->bij", bin_gain, terms).expand(noise_magnitudes.shape[0], -1, -1)
    harmonic = 0.5 * amplitude ** 2 * (harmonic_distribution ** 2 * weight).sum(-1)
    noise = NOISE_VARIANCE * (torch.bmm(noise_magnitudes, form) * noise_magnitudes).sum(-1)
    return harmonic + noise


def match_loudness(controls: dict[str, torch.Tensor], level_db: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                   filter_gain: tuple[torch.Tensor, float] | None = None) -> dict[str, torch.Tensor]:
    """Scale ``amplitude`` and ``noise_magnitudes`` by one gain per frame so that the synthesis (through the
    filter whose power gain is ``filter_gain``, if given: see :func:`synthesis_loudness_power`) reads
    ``level_db`` [batch, frames] (see the module docstring), less the power of the loudness floor (``DB_FLOOR``,
    -80 dB), so that frames read at the floor are silent. Other controls pass through."""
    power = synthesis_loudness_power(controls["f0_hz"], controls["amplitude"], controls["harmonic_distribution"],
                                     controls["noise_magnitudes"], sample_rate, filter_gain)
    # The loudness floor is where the analysis stopped measuring: it and anything below play as silence
    # (-120 dB rather than 0 keeps the square root's gradient finite).
    wanted = (torch.pow(10.0, level_db / 10.0) - 10.0 ** (DB_FLOOR / 10.0)).clamp_min(1e-12)
    return scale_level(controls, torch.sqrt(wanted / power.clamp_min(1e-30)))


def scale_level(controls: dict[str, torch.Tensor], gain: torch.Tensor) -> dict[str, torch.Tensor]:
    """Controls with ``amplitude`` and ``noise_magnitudes`` scaled by ``gain`` [batch, frames] (linear), so the
    harmonic and the noise part keep their balance. Other controls pass through."""
    return {**controls, "amplitude": controls["amplitude"] * gain,
            "noise_magnitudes": controls["noise_magnitudes"] * gain.unsqueeze(-1)}


class HarmonicSynth(nn.Module):
    """Harmonic oscillator bank.

    Controls:
        f0_hz: [batch, frames] Hz.
        amplitude: [batch, frames] linear, [1e-7, 2] when made by ``get_controls`` (before loudness matching).
        harmonic_distribution: [batch, frames, n_harmonics], zero at/above Nyquist, sums to 1 per frame.
    """

    def __init__(self, n_harmonics: int = 60, sample_rate: int = SAMPLE_RATE, hop_size: int | None = None,
                 nyquist_fade: float = NYQUIST_FADE, amplitude_upsampling: str = AMPLITUDE_UPSAMPLING):
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
