"""Synthesis controls measured directly from audio, without a trained network (the "analysis" path).

A baseline for expression extraction, and a way to extract expression before any model exists:
    f0_hz                  CREPE f0, as given                                             [B, T] Hz
    harmonic_distribution  STFT magnitude (Hann, 1024 samples, the project's centred 64-sample hop), scaled so a
                           sinusoid reads its amplitude, read at k * f0 for k = 1..n_harmonics below Nyquist
                           (linear interpolation between bins), normalised to sum 1        [B, T, n_harmonics]
    amplitude              the sum of those harmonic amplitudes, as the harmonic synth defines its amplitude
                           [B, T]. (A-weighted loudness instead scored worse on the corpus: volume r 0.77 vs
                           0.82, because A-weighting makes low notes read quieter.)
    noise_magnitudes       mean STFT magnitude, per band of n_bands equal bands from 0 Hz to Nyquist, of the bins
                           farther than 2 bins from every harmonic (0 where a band has none), scaled to the
                           amplitude of a sinusoid of that peak magnitude                  [B, T, n_bands]
The levels are not on the trained model's scale (a model's amplitude is a synthesizer gain), so compare
physical values only within one path.
"""
from __future__ import annotations

import torch

from mididdsp.dsp.core import HOP_SIZE, SAMPLE_RATE

ANALYSIS_FFT_SIZE = 1024


def analysis_controls(audio: torch.Tensor, f0_hz: torch.Tensor, n_harmonics: int = 60,
                      n_bands: int = 65, sample_rate: int = SAMPLE_RATE, n_fft: int = ANALYSIS_FFT_SIZE
                      ) -> dict[str, torch.Tensor]:
    """Audio [B, samples] (or [samples]) with its f0 [B, T] (or [T]) -> synthesis controls (module docstring).

    T must be ``samples // 64 + 1`` (the project's centred frames); outputs are [B, T, ...] (batched like f0).
    """
    from mididdsp.dsp.spectral import magnitude_spectrogram

    unbatched = f0_hz.dim() == 1
    audio = torch.as_tensor(audio, dtype=torch.float32)
    audio, f0_hz = (x.unsqueeze(0) if x.dim() == 1 else x for x in (audio, f0_hz))
    window_sum = float(torch.hann_window(n_fft).sum())
    magnitude = magnitude_spectrogram(audio, n_fft, HOP_SIZE) * (2.0 / window_sum)  # sinusoid amplitude per bin
    frames = f0_hz.shape[1]
    magnitude = magnitude[:, :frames]
    if magnitude.shape[1] < frames:  # cannot happen with matching lengths; keep shapes safe anyway
        magnitude = torch.cat([magnitude, magnitude[:, -1:].expand(-1, frames - magnitude.shape[1], -1)], dim=1)
    n_bins = magnitude.shape[-1]
    bin_hz = sample_rate / n_fft
    k = torch.arange(1, n_harmonics + 1, dtype=f0_hz.dtype, device=f0_hz.device)
    harmonic_bins = f0_hz.unsqueeze(-1) * k / bin_hz                         # [B, T, K] fractional bins
    below = harmonic_bins < (n_bins - 1)
    low_bin = harmonic_bins.clamp(0, n_bins - 2).floor()
    fraction = harmonic_bins.clamp(0, n_bins - 2) - low_bin
    low_value = magnitude.gather(-1, low_bin.long())
    high_value = magnitude.gather(-1, low_bin.long() + 1)
    harmonics = torch.where(below, low_value + fraction * (high_value - low_value), torch.zeros_like(low_value))
    distribution = harmonics / harmonics.sum(-1, keepdim=True).clamp_min(1e-12)

    # Bins away from every harmonic: distance (in bins) to the nearest multiple of f0.
    bins = torch.arange(n_bins, dtype=f0_hz.dtype, device=f0_hz.device)
    f0_bins = (f0_hz / bin_hz).clamp_min(1e-3).unsqueeze(-1)                  # [B, T, 1]
    nearest = torch.round(bins / f0_bins).clamp_min(1.0) * f0_bins
    off_harmonic = ((bins - nearest).abs() > 2.0).to(magnitude.dtype)        # [B, T, n_bins]
    band = torch.clamp((bins / (n_bins - 1) * (n_bands - 1)).round().long(), 0, n_bands - 1)
    membership = torch.nn.functional.one_hot(band, n_bands).to(magnitude.dtype)  # [n_bins, n_bands]
    band_sum = (magnitude * off_harmonic) @ membership
    band_count = off_harmonic @ membership
    noise = band_sum / band_count.clamp_min(1.0)
    amplitude = harmonics.sum(-1)  # the synth's amplitude is the sum of its harmonics' amplitudes
    controls = {"f0_hz": f0_hz, "amplitude": amplitude, "harmonic_distribution": distribution,
                "noise_magnitudes": noise}
    return {key: value.squeeze(0) for key, value in controls.items()} if unbatched else controls
