"""Spectra, A-weighted loudness and the multi-scale spectral loss."""
from __future__ import annotations

import functools

import torch

from mididdsp.dsp.core import DB_FLOOR, FRAME_RATE, SAMPLE_RATE, power_to_db

DEFAULT_FFT_SIZES = (2048, 1024, 512, 256, 128, 64)


def magnitude_spectrogram(audio: torch.Tensor, n_fft: int, hop_size: int, center: bool = True) -> torch.Tensor:
    """|STFT| with a periodic Hann window.

    Args:
        audio: [batch, samples].
    Returns:
        [batch, frames, n_fft // 2 + 1]; with ``center=True`` frames = samples // hop_size + 1 (zero padded).
    """
    window = torch.hann_window(n_fft, dtype=audio.dtype, device=audio.device)
    spectrum = torch.stft(audio, n_fft, hop_size, window=window, center=center, pad_mode="constant",
                          return_complex=True)
    return spectrum.abs().transpose(1, 2)


@functools.lru_cache(maxsize=16)
def _a_weighting_power(n_fft: int, sample_rate: int) -> torch.Tensor:
    """IEC 61672 A-weighting as a linear power gain per rfft bin, [n_fft // 2 + 1]; exactly 0 at 0 Hz."""
    f2 = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, dtype=torch.float64) ** 2
    response = (12194.0 ** 2 * f2 ** 2) / ((f2 + 20.6 ** 2) * torch.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2))
                                           * (f2 + 12194.0 ** 2))
    return (response ** 2 * 10 ** (2.0 / 10)).to(torch.float32)  # +2.0 dB makes 1 kHz exactly 0 dB


def compute_loudness(audio: torch.Tensor, sample_rate: int = SAMPLE_RATE, frame_rate: int = FRAME_RATE,
                     n_fft: int = 512, floor_db: float = DB_FLOOR) -> torch.Tensor:
    """A-weighted loudness per centred frame, in dB relative to full scale.

    The power spectrum is weighted by the A-curve and summed over frequency IN LINEAR POWER (never an average of
    dB values), normalised by the window energy (Parseval), so the result is the A-weighted mean-square level of
    the frame: a full-scale 1 kHz sine reads -3.0 dB, silence reads ``floor_db``.

    Args:
        audio: [batch, samples] (or [samples]).
    Returns:
        [batch, samples // hop + 1] (or [frames]) loudness in dB, hop = sample_rate / frame_rate.
    """
    squeeze = audio.dim() == 1
    audio = audio.unsqueeze(0) if squeeze else audio
    hop_size = round(sample_rate / frame_rate)
    window = torch.hann_window(n_fft, dtype=audio.dtype, device=audio.device)
    power = magnitude_spectrogram(audio, n_fft, hop_size) ** 2
    # One-sided spectrum: every bin but DC and Nyquist stands for two.
    side_weight = torch.full((n_fft // 2 + 1,), 2.0, dtype=audio.dtype, device=audio.device)
    side_weight[0] = side_weight[-1] = 1.0
    weighting = _a_weighting_power(n_fft, sample_rate).to(audio.device, audio.dtype) * side_weight
    mean_square = (power * weighting).sum(-1) / (n_fft * (window ** 2).sum())
    loudness = power_to_db(mean_square, floor_db)
    return loudness.squeeze(0) if squeeze else loudness


def multiscale_spectral_loss(
    audio: torch.Tensor,
    target: torch.Tensor,
    fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES,
    overlap: float = 0.75,
    magnitude_weight: float = 1.0,
    log_magnitude_weight: float = 1.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """DDSP's multi-scale spectral loss, summed over scales.

    Per scale: ``mean|S_a - S_t| * magnitude_weight + mean|log(S_a + eps) - log(S_t + eps)| * log_magnitude_weight``
    with S the |STFT| (Hann window, hop = size * (1 - overlap)). At 44.1/48 kHz pass larger sizes (e.g. 4096..256).

    Args:
        audio, target: [batch, samples] (same shape).
    Returns:
        scalar loss.
    """
    if audio.shape != target.shape:
        raise ValueError(f"audio {tuple(audio.shape)} and target {tuple(target.shape)} must have the same shape")
    both = torch.cat([audio, target], dim=0)  # one STFT per scale for both signals
    batch = audio.shape[0]
    loss = audio.new_zeros(())
    for n_fft in fft_sizes:
        hop_size = max(1, int(n_fft * (1.0 - overlap)))
        magnitude = magnitude_spectrogram(both, n_fft, hop_size)
        produced, wanted = magnitude[:batch], magnitude[batch:]
        if magnitude_weight:
            loss = loss + magnitude_weight * (produced - wanted).abs().mean()
        if log_magnitude_weight:
            loss = loss + log_magnitude_weight * (torch.log(produced + eps) - torch.log(wanted + eps)).abs().mean()
    return loss


class MultiScaleSpectralLoss(torch.nn.Module):
    """Module form of :func:`multiscale_spectral_loss` (settings fixed at construction)."""

    def __init__(self, fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES, overlap: float = 0.75,
                 magnitude_weight: float = 1.0, log_magnitude_weight: float = 1.0):
        super().__init__()
        self.fft_sizes = tuple(fft_sizes)
        self.overlap = overlap
        self.magnitude_weight = magnitude_weight
        self.log_magnitude_weight = log_magnitude_weight

    def forward(self, audio: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multiscale_spectral_loss(audio, target, self.fft_sizes, self.overlap, self.magnitude_weight,
                                        self.log_magnitude_weight)
