"""Conventions and small pure tensor functions shared by every part of mididdsp.

Tensor convention (used everywhere in the project):
    audio           [batch, samples]            float32, full scale = 1.0
    frame signals   [batch, frames, channels]   (or [batch, frames] for a single channel)
Frames are "centred": frame ``i`` describes the instant ``i * hop_size`` samples, and a signal of ``n`` samples
has ``n // hop_size + 1`` frames (see :func:`n_frames`). f0, loudness, synthesis controls and losses all use it.
"""
from __future__ import annotations

import math

import torch

from mididdsp.dsp.constants import DB_FLOOR, FRAME_RATE, HOP_SIZE, SAMPLE_RATE, hop_size_for, n_frames  # noqa: F401
from mididdsp.dsp.constants import fast_fft_size as _fast_fft_size  # noqa: F401


def hz_to_midi(f0_hz: torch.Tensor) -> torch.Tensor:
    """Frequency in Hz -> MIDI note number (float). 0 Hz maps to 0 instead of -inf."""
    f0_hz = torch.as_tensor(f0_hz)
    midi = 12.0 * torch.log2(f0_hz.clamp_min(1e-5) / 440.0) + 69.0
    return torch.where(f0_hz > 0, midi, torch.zeros_like(midi))


def midi_to_hz(midi: torch.Tensor) -> torch.Tensor:
    """MIDI note number (float) -> frequency in Hz."""
    midi = torch.as_tensor(midi)
    return 440.0 * torch.pow(2.0, (midi - 69.0) / 12.0)


def amplitude_to_db(amplitude: torch.Tensor, floor_db: float = DB_FLOOR) -> torch.Tensor:
    """Linear amplitude -> dB (20 log10), floored at ``floor_db``."""
    amplitude = torch.as_tensor(amplitude)
    return (20.0 * torch.log10(amplitude.abs().clamp_min(1e-20))).clamp_min(floor_db)


def power_to_db(power: torch.Tensor, floor_db: float = DB_FLOOR) -> torch.Tensor:
    """Linear power -> dB (10 log10), floored at ``floor_db``."""
    power = torch.as_tensor(power)
    return (10.0 * torch.log10(power.clamp_min(1e-20))).clamp_min(floor_db)


def db_to_amplitude(db: torch.Tensor) -> torch.Tensor:
    """dB -> linear amplitude (10 ** (db / 20))."""
    return torch.pow(10.0, torch.as_tensor(db) / 20.0)


def db_to_power(db: torch.Tensor) -> torch.Tensor:
    """dB -> linear power (10 ** (db / 10))."""
    return torch.pow(10.0, torch.as_tensor(db) / 10.0)


def exp_sigmoid(x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7) -> torch.Tensor:
    """DDSP's positive scaling of network outputs: ``max_value * sigmoid(x) ** ln(exponent) + threshold``.

    Range [threshold, max_value + threshold]; a slope that suits amplitudes (roughly exponential in x).
    """
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


# ---------------------------------------------------------------------------------------------------------------
# Frames -> samples
# ---------------------------------------------------------------------------------------------------------------
def _interpolation_weights(hop_size: int, method: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weight of the *next* frame for each of the ``hop_size`` samples between two frames, shape [hop_size]."""
    position = torch.arange(hop_size, dtype=dtype, device=device) / hop_size
    if method == "linear":
        return position
    if method == "hann":
        # Two Hann windows of length 2*hop centred on neighbouring frames overlap-add to exactly 1; between two
        # frames the next frame's window rises as sin^2.
        return torch.sin(0.5 * math.pi * position) ** 2
    raise ValueError(f"unknown upsampling method {method!r}; expected 'linear' or 'hann'")


def grid_lookup(table: torch.Tensor, step: float, position: torch.Tensor) -> torch.Tensor:
    """Values of ``table`` (a grid from 0 with spacing ``step``) at ``position``, linearly interpolated and held at
    the ends.

    Args:
        table: [n] (one table for every row) or [batch, n] (one per row of ``position``).
        position: [batch, ...] in the grid's unit.
    Returns:
        ``position``'s shape.
    """
    table = table.reshape(1, -1) if table.dim() == 1 else table
    index = (position / step).clamp(0.0, table.shape[-1] - 1.0)
    lower = index.floor().long().clamp_max(table.shape[-1] - 2)
    fraction = index - lower
    if table.shape[0] > 1:  # one table per batch row: index the flattened tables
        offset = torch.arange(table.shape[0], device=table.device).reshape(-1, *[1] * (lower.dim() - 1))
        lower = lower + offset * table.shape[-1]
    flat = table.reshape(-1)
    return flat[lower] * (1.0 - fraction) + flat[lower + 1] * fraction


def upsample_frames(frames: torch.Tensor, n_samples: int, hop_size: int = HOP_SIZE, method: str = "linear") -> torch.Tensor:
    """Frame-rate signal -> sample-rate signal, with centred frames (frame ``i`` sits at sample ``i * hop_size``).

    Args:
        frames: [batch, frames, channels] (or [batch, frames]).
        n_samples: length of the output. Frames missing at the end (fewer than ``n_samples // hop_size + 1``)
            are filled by holding the last frame.
        hop_size: samples per frame.
        method: ``"linear"`` interpolation, or ``"hann"``: overlap-add of Hann windows of ``2 * hop_size`` samples
            (exact for constant input, smooth at frame boundaries).
    Returns:
        [batch, n_samples, channels] (or [batch, n_samples] if ``frames`` was 2-D).
    """
    squeeze = frames.dim() == 2
    if squeeze:
        frames = frames.unsqueeze(-1)
    needed = -(-int(n_samples) // hop_size) + 1  # segments to cover n_samples, plus the closing frame
    if frames.shape[1] < needed:
        frames = torch.cat([frames, frames[:, -1:].expand(-1, needed - frames.shape[1], -1)], dim=1)
    frames = frames[:, :needed]
    batch, count, channels = frames.shape
    next_weight = _interpolation_weights(hop_size, method, frames.dtype, frames.device)[None, None, :, None]
    left, right = frames[:, :-1, None, :], frames[:, 1:, None, :]
    samples = left + (right - left) * next_weight  # [batch, segments, hop, channels]
    samples = samples.reshape(batch, (count - 1) * hop_size, channels)[:, :n_samples]
    return samples.squeeze(-1) if squeeze else samples


# ---------------------------------------------------------------------------------------------------------------
# Convolution and filter design
# ---------------------------------------------------------------------------------------------------------------
def fft_convolve(signal: torch.Tensor, kernel: torch.Tensor, kernel_spectra: dict | None = None) -> torch.Tensor:
    """Full linear convolution by FFT along the last axis.

    Args:
        signal: [..., n]; kernel: [..., m] (broadcastable leading axes).
        kernel_spectra: optional dict in which the kernel's spectrum is kept per FFT size, for callers that
            convolve many blocks with one fixed kernel (streamed reverb); never pass one for a kernel that changes.
    Returns:
        [..., n + m - 1], equal to ``scipy.signal.fftconvolve(signal, kernel)``.
    """
    n_out = signal.shape[-1] + kernel.shape[-1] - 1
    n_fft = _fast_fft_size(n_out)
    if kernel_spectra is None:
        kernel_spectrum = torch.fft.rfft(kernel, n_fft)
    else:
        if n_fft not in kernel_spectra:
            kernel_spectra[n_fft] = torch.fft.rfft(kernel, n_fft)
        kernel_spectrum = kernel_spectra[n_fft]
    spectrum = torch.fft.rfft(signal, n_fft) * kernel_spectrum
    return torch.fft.irfft(spectrum, n_fft)[..., :n_out]


def frequency_impulse_response(magnitudes: torch.Tensor, window_size: int | None = None) -> torch.Tensor:
    """Design linear-phase FIR filters from magnitude responses (frequency sampling method).

    Args:
        magnitudes: [..., n_bands] linear magnitudes at ``n_bands`` frequencies evenly spaced from 0 Hz to Nyquist.
        window_size: taps of the returned filter (default ``2 * (n_bands - 1)``), at most that.
    Returns:
        [..., window_size] impulse responses, Hann windowed, symmetric about tap ``window_size // 2``: filtering with
        them delays a signal by exactly ``window_size // 2`` samples.
    """
    n_bands = magnitudes.shape[-1]
    full_size = 2 * (n_bands - 1)
    window_size = full_size if window_size is None else int(window_size)
    if not 1 < window_size <= full_size:
        raise ValueError(f"window_size must be in (1, {full_size}], got {window_size}")
    # A real, even spectrum gives a zero-phase impulse response centred on tap 0.
    impulse_response = torch.fft.irfft(magnitudes.to(torch.complex64 if magnitudes.dtype != torch.float64 else torch.complex128), full_size)
    half = window_size // 2
    # Take taps -half .. window_size-half-1 (zero phase centred at index `half`), then taper with a periodic Hann
    # window whose peak sits on that same index, so the filter stays exactly linear phase.
    impulse_response = torch.cat([impulse_response[..., -half:], impulse_response[..., : window_size - half]], dim=-1)
    window = torch.hann_window(window_size, periodic=True, dtype=impulse_response.dtype, device=impulse_response.device)
    return impulse_response * window


# ---------------------------------------------------------------------------------------------------------------
# Harmonic bookkeeping
# ---------------------------------------------------------------------------------------------------------------
def nyquist_gain(frequency_hz: torch.Tensor, sample_rate: int, fade: float = 0.05) -> torch.Tensor:
    """Gain that silences partials at or above Nyquist, with a raised-cosine fade just below it.

    A hard mask clicks when a partial crosses Nyquist during a glide; the fade makes the partial disappear
    smoothly. ``fade`` is the fade width as a fraction of the Nyquist frequency (0 gives a hard mask).

    Args:
        frequency_hz: any shape, frequency of each partial in Hz.
    Returns:
        same shape, gain in [0, 1]: 1 below ``(1 - fade) * nyquist``, 0 at and above ``nyquist``.
    """
    nyquist = sample_rate / 2.0
    if fade <= 0:
        return (frequency_hz < nyquist).to(frequency_hz.dtype)
    position = ((nyquist - frequency_hz) / (fade * nyquist)).clamp(0.0, 1.0)  # 0 at Nyquist, 1 below the fade
    gain = 0.5 - 0.5 * torch.cos(math.pi * position)
    return torch.where(frequency_hz < nyquist, gain, torch.zeros_like(gain))


def normalize_harmonic_distribution(harmonic_distribution: torch.Tensor, f0_hz: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                                    fade: float = 0.05) -> torch.Tensor:
    """Remove harmonics at or above Nyquist (with the same fade as the synthesizer) and renormalise to sum 1.

    Args:
        harmonic_distribution: [batch, frames, n_harmonics], non-negative weights.
        f0_hz: [batch, frames] or [batch, frames, 1], fundamental in Hz.
    Returns:
        [batch, frames, n_harmonics], each frame summing to 1 (or all zero if no harmonic is below Nyquist).
    """
    if f0_hz.dim() == 2:
        f0_hz = f0_hz.unsqueeze(-1)
    n_harmonics = harmonic_distribution.shape[-1]
    # Only the harmonics that reach the fade band somewhere need the gain computed; below it the gain is 1 and
    # from the first harmonic above Nyquist everywhere it is 0.
    nyquist = sample_rate / 2.0
    lowest, highest = f0_hz.detach().abs().min().item(), f0_hz.detach().abs().max().item()
    first = min(n_harmonics, math.floor((1.0 - max(fade, 0.0)) * nyquist / highest)) if highest > 0 else n_harmonics
    last = n_harmonics if lowest <= 0 else min(n_harmonics, math.ceil(nyquist / lowest))
    first = min(first, last)
    parts = [harmonic_distribution[..., :first]]
    if last > first:
        numbers = torch.arange(first + 1, last + 1, dtype=f0_hz.dtype, device=f0_hz.device)
        parts.append(harmonic_distribution[..., first:last] * nyquist_gain(f0_hz * numbers, sample_rate, fade))
    if n_harmonics > last:
        parts.append(torch.zeros_like(harmonic_distribution[..., last:]))
    masked = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
    return masked / masked.sum(dim=-1, keepdim=True).clamp_min(1e-7)
