"""Synthesizers as pure tensor functions: controls -> audio.

Controls are frame-rate signals with centred frames (frame ``i`` sits at sample ``i * hop_size``); audio is
[batch, samples]. Every function here is differentiable with respect to its controls.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from mididdsp.dsp.core import (FRAME_RATE, SAMPLE_RATE, frequency_impulse_response, normalize_harmonic_distribution,
                               nyquist_gain, upsample_frames)
from mididdsp.dsp.spectral import one_sided_a_weighting


def default_hop_size(sample_rate: int) -> int:
    """Samples per frame at the project's 250 Hz frame rate (rounded when the rate does not divide)."""
    return max(1, round(sample_rate / FRAME_RATE))


def _as_frames(signal: torch.Tensor) -> torch.Tensor:
    """[batch, frames] or [batch, frames, 1] -> [batch, frames]."""
    return signal.squeeze(-1) if signal.dim() == 3 else signal


def accumulate_phase(f0_hz: torch.Tensor, sample_rate: int, initial_phase: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Instantaneous phase, in cycles, of an oscillator following ``f0_hz``.

    The running sum is taken in float64 and wrapped to [-0.5, 0.5) cycles before returning to float32, so a tone
    held for minutes keeps its exact frequency and phase (a float32 running sum loses cents of pitch and adds
    phase noise that harmonic k multiplies by k).

    Args:
        f0_hz: [batch, samples] instantaneous frequency in Hz.
        initial_phase: [batch] phase in cycles at the first sample (default 0).
    Returns:
        phase: [batch, samples] float32, cycles in [-0.5, 0.5); sample 0 has ``initial_phase``.
        final_phase: [batch] float64, wrapped phase after the last sample (the ``initial_phase`` of what follows).
    """
    phase, final_phase = _wrapped_phase_float64(f0_hz, sample_rate, initial_phase)
    return phase.to(f0_hz.dtype), final_phase


def _wrapped_phase_float64(f0_hz: torch.Tensor, sample_rate: int, initial_phase: torch.Tensor | None):
    increment = f0_hz.to(torch.float64) / sample_rate
    total = torch.cumsum(increment, dim=-1)
    start = torch.zeros_like(total[:, :1]) if initial_phase is None else initial_phase.to(torch.float64).reshape(-1, 1)
    phase = start + total - increment
    final_phase = start[:, 0] + total[:, -1]
    return phase - torch.round(phase), final_phase - torch.round(final_phase)


def harmonic_synthesis(
    f0_hz: torch.Tensor,
    amplitude: torch.Tensor,
    harmonic_distribution: torch.Tensor,
    n_samples: int,
    sample_rate: int = SAMPLE_RATE,
    hop_size: int | None = None,
    initial_phase: torch.Tensor | None = None,
    amplitude_upsampling: str = "hann",
    nyquist_fade: float = 0.05,
    normalize: bool = True,
    chunk_size: int = 16384,
    return_final_phase: bool = False,
    backend: str = "auto",
):
    """Additive synthesis of a harmonic tone: ``y[n] = A[n] * sum_k a_k[n] * sin(2 pi k phi[n])``.

    Args:
        f0_hz: [batch, frames] (or [batch, frames, 1]) fundamental frequency in Hz, linearly interpolated to samples.
        amplitude: [batch, frames] (or [batch, frames, 1]) overall linear amplitude (full scale = 1).
        harmonic_distribution: [batch, frames, n_harmonics] non-negative weight of harmonics 1..n_harmonics.
        n_samples: output length in samples.
        sample_rate: Hz.
        hop_size: samples per frame (default: ``sample_rate / 250`` rounded).
        initial_phase: [batch] phase in cycles at sample 0 (carry ``final_phase`` across chunks).
        amplitude_upsampling: ``"hann"`` (overlap-add of Hann windows) or ``"linear"``. With ``"hann"``, a harmonic
            is still interpolated linearly in the segments where it enters the Nyquist fade band: Hann overlap-add
            turns a changing amplitude (the fade, or the renormalisation it causes) into a ripple at the frame rate,
            and for a partial that close to Nyquist the ripple's upper sidebands lie above Nyquist and fold back
            (-68 dB at 16 kHz on a glide through Nyquist, against -104 dB with linear interpolation there).
        nyquist_fade: harmonics fade out (raised cosine) over this fraction of Nyquist just below it and are
            silent at and above it, per frame AND per sample, so glides crossing Nyquist inside a frame do not alias.
        normalize: renormalise the distribution to sum 1 over the harmonics below Nyquist (per frame).
        chunk_size: samples per block of work; bounds memory to ``batch * chunk_size * n_harmonics`` floats.
        return_final_phase: also return the [batch] float64 phase (cycles) after the last sample.
        backend: ``"torch"`` (differentiable tensor code), ``"numba"`` (compiled kernel, no gradient, CPU) or
            ``"auto"``: numba when no gradient is needed, the tensors are on the CPU and numba imports.
    Returns:
        audio [batch, n_samples] (and the final phase if asked).
    """
    hop_size = hop_size or default_hop_size(sample_rate)
    f0_frames = _as_frames(f0_hz)
    amplitude = _as_frames(amplitude)
    if normalize:
        weights = normalize_harmonic_distribution(harmonic_distribution, f0_frames, sample_rate, nyquist_fade)
    else:
        weights = harmonic_distribution
    # Per-frame amplitude of every harmonic; the per-sample Nyquist gain below is applied on top of this.
    harmonic_amplitudes = amplitude.unsqueeze(-1) * weights

    n_segments = -(-int(n_samples) // hop_size)
    harmonic_amplitudes = _hold_last_frame(harmonic_amplitudes, n_segments + 1)
    f0_samples = upsample_frames(f0_frames, n_segments * hop_size, hop_size, "linear")
    next_weight = _segment_weights(hop_size, amplitude_upsampling, f0_samples)
    # Weights for the harmonics in the fade band (see ``amplitude_upsampling``): always linear.
    fade_weight = _segment_weights(hop_size, "linear", f0_samples)

    if _use_kernel(backend, f0_samples, harmonic_amplitudes):
        from mididdsp.dsp import kernels

        initial = None if initial_phase is None else initial_phase.detach().cpu().numpy()
        phase, final = kernels.wrapped_phase(f0_samples[:, :n_samples].numpy(), sample_rate, initial)
        phase = np.pad(phase, ((0, 0), (0, n_segments * hop_size - n_samples)))
        audio = kernels.harmonic_block(phase, f0_samples.numpy(), harmonic_amplitudes.numpy(), next_weight.numpy(),
                                       sample_rate, nyquist_fade, fade_weight.numpy())
        audio = torch.from_numpy(audio).to(f0_samples.dtype)[:, :n_samples]
        return (audio, torch.from_numpy(final)) if return_final_phase else audio

    phase, final_phase = _wrapped_phase_float64(f0_samples[:, :n_samples], sample_rate, initial_phase)
    phase = F.pad(phase, (0, n_segments * hop_size - n_samples))
    phase = phase.to(f0_samples.dtype)
    segments_per_chunk = max(1, chunk_size // hop_size)
    pieces = []
    for first in range(0, n_segments, segments_per_chunk):
        last = min(n_segments, first + segments_per_chunk)
        samples = slice(first * hop_size, last * hop_size)
        pieces.append(_harmonic_block(phase[:, samples], f0_samples[:, samples],
                                      harmonic_amplitudes[:, first:last + 1], next_weight, sample_rate, nyquist_fade,
                                      None if amplitude_upsampling == "linear" else fade_weight))
    audio = torch.cat(pieces, dim=1)[:, :n_samples]
    return (audio, final_phase) if return_final_phase else audio


def _use_kernel(backend: str, *tensors: torch.Tensor) -> bool:
    if backend == "torch":
        return False
    if backend not in ("auto", "numba"):
        raise ValueError(f"unknown backend {backend!r}; expected 'auto', 'torch' or 'numba'")
    from mididdsp.dsp import kernels

    usable = all(tensor.device.type == "cpu" for tensor in tensors) and kernels.available()
    if backend == "numba":
        if not usable:
            raise RuntimeError("the numba backend needs numba and CPU tensors")
        if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors):
            raise RuntimeError("the numba backend has no gradient; use backend='torch' for training")
        return True
    return usable and not (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors))


def _hold_last_frame(frames: torch.Tensor, count: int) -> torch.Tensor:
    """Pad [batch, frames, channels] to ``count`` frames by repeating the last one (or cut to ``count``)."""
    if frames.shape[1] < count:
        frames = torch.cat([frames, frames[:, -1:].expand(-1, count - frames.shape[1], -1)], dim=1)
    return frames[:, :count]


def _segment_weights(hop_size: int, method: str, like: torch.Tensor) -> torch.Tensor:
    position = torch.arange(hop_size, dtype=like.dtype, device=like.device) / hop_size
    if method == "linear":
        return position
    if method == "hann":
        return torch.sin(0.5 * math.pi * position) ** 2
    raise ValueError(f"unknown amplitude_upsampling {method!r}; expected 'hann' or 'linear'")


def _harmonic_block(phase: torch.Tensor, f0_samples: torch.Tensor, harmonic_amplitudes: torch.Tensor,
                    next_weight: torch.Tensor, sample_rate: int, nyquist_fade: float,
                    fade_weight: torch.Tensor | None = None) -> torch.Tensor:
    """One block of whole segments: phase/f0 [batch, segments * hop], amplitudes [batch, segments + 1, harmonics].

    ``fade_weight`` ([hop], or None to use ``next_weight``) interpolates, segment by segment, the harmonics that
    enter the Nyquist fade band there (``k * max |f0| > (1 - nyquist_fade) * nyquist`` over the segment).
    """
    batch, n_block = phase.shape
    hop_size = next_weight.shape[0]
    n_segments = n_block // hop_size
    nyquist = sample_rate / 2.0
    # Harmonics above Nyquist at every sample of the block contribute nothing: skip their sines entirely.
    lowest_f0 = f0_samples.detach().abs().min().item()
    n_harmonics = harmonic_amplitudes.shape[-1]
    n_active = n_harmonics if lowest_f0 <= 0 else min(n_harmonics, math.ceil(nyquist / lowest_f0))
    if n_active == 0:
        return phase.new_zeros(batch, n_block)
    harmonic_numbers = torch.arange(1, n_active + 1, dtype=phase.dtype, device=phase.device)
    sines = torch.sin((2.0 * math.pi) * phase.unsqueeze(-1) * harmonic_numbers)  # [batch, samples, active]

    # Per-sample Nyquist gain, only for the harmonics that reach the fade band somewhere in this block.
    highest_f0 = f0_samples.detach().abs().max().item()
    first_faded = max(0, min(n_active, math.floor((1.0 - max(nyquist_fade, 0.0)) * nyquist / max(highest_f0, 1e-9))))
    if first_faded < n_active:
        if f0_samples.requires_grad:
            faded_numbers = harmonic_numbers[first_faded:]
            gain = nyquist_gain(f0_samples.unsqueeze(-1) * faded_numbers, sample_rate, nyquist_fade)
            sines = torch.cat([sines[..., :first_faded], sines[..., first_faded:] * gain], dim=-1)
        elif sines.device.type == "cpu":  # item by item: skips the items that need no gain
            _apply_nyquist_gain_(sines, f0_samples, harmonic_numbers, sample_rate, nyquist_fade)
        else:  # the loop reads 3 values per item to the host, a sync each on an accelerator
            _apply_nyquist_gain_batched_(sines, f0_samples, harmonic_numbers, sample_rate, nyquist_fade, first_faded)

    # Between frames j and j+1 the amplitude of harmonic k is (1 - w) * c_jk + w * c_(j+1)k, so the block is two
    # batched matrix products of the sines with the frame amplitudes: no [samples, harmonics] amplitude tensor.
    sines = sines.reshape(batch * n_segments, hop_size, n_active)
    amplitudes = harmonic_amplitudes[..., :n_active]
    pair = torch.stack([amplitudes[:, :-1], amplitudes[:, 1:]], dim=-1).reshape(batch * n_segments, n_active, 2)
    both = torch.bmm(sines, pair)  # [batch * segments, hop, 2]
    audio = both[..., 0] + (both[..., 1] - both[..., 0]) * next_weight
    if fade_weight is not None and first_faded < n_active:
        # Harmonics in the fade band get fade_weight instead: add (fade_weight - next_weight) * their amplitude step.
        fade_start = (1.0 - max(nyquist_fade, 0.0)) * nyquist
        segment_max = f0_samples.detach().abs().reshape(batch, n_segments, hop_size).amax(-1).to(torch.float64)
        safe = torch.floor(fade_start / segment_max.clamp_min(1e-9))  # [batch, segments], as in the kernel
        faded = harmonic_numbers[first_faded:].to(torch.float64) > safe.unsqueeze(-1)
        step = (amplitudes[:, 1:, first_faded:] - amplitudes[:, :-1, first_faded:]) * faded.to(amplitudes.dtype)
        faded_step = torch.bmm(sines[..., first_faded:], step.reshape(batch * n_segments, -1, 1))[..., 0]
        audio = audio + faded_step * (fade_weight - next_weight)
    return audio.reshape(batch, n_block)


def _apply_nyquist_gain_(sines: torch.Tensor, f0_samples: torch.Tensor, harmonic_numbers: torch.Tensor,
                         sample_rate: int, nyquist_fade: float) -> None:
    """In place, item by item: multiply the few harmonics whose frequency enters the fade band in this block by
    their per-sample Nyquist gain and silence those above Nyquist throughout (an item's harmonics can be above
    Nyquist while another item's are not; without normalisation their weight is not zero). Those below the band
    need no gain. (Used when no gradient flows to f0.)"""
    nyquist = sample_rate / 2.0
    with torch.no_grad():
        for item in range(sines.shape[0]):
            lowest, highest = f0_samples[item].aminmax()
            first = math.floor((1.0 - max(nyquist_fade, 0.0)) * nyquist / max(highest.item(), 1e-9))
            last = sines.shape[-1] if lowest.item() <= 0 else min(sines.shape[-1], math.ceil(nyquist / lowest.item()))
            if first < last:
                frequencies = f0_samples[item].unsqueeze(-1) * harmonic_numbers[first:last]
                sines[item, :, first:last] *= nyquist_gain(frequencies, sample_rate, nyquist_fade)
            sines[item, :, max(last, 0):] = 0.0


def _apply_nyquist_gain_batched_(sines: torch.Tensor, f0_samples: torch.Tensor, harmonic_numbers: torch.Tensor,
                                 sample_rate: int, nyquist_fade: float, first: int) -> None:
    """:func:`_apply_nyquist_gain_` for the whole batch at once, with the same values and no host read (for
    accelerators). sines [batch, samples, active] in place; f0_samples [batch, samples] Hz; ``first``: the
    lowest harmonic number - 1 that enters the fade band in any item (from the block's largest |f0|). From there
    every harmonic is multiplied by its per-sample gain: exactly 1 below an item's band, exactly 0 at and above
    Nyquist (where the loop writes 0), the loop's gain in between."""
    with torch.no_grad():
        if first < sines.shape[-1]:
            frequencies = f0_samples.unsqueeze(-1) * harmonic_numbers[first:]
            sines[..., first:] *= nyquist_gain(frequencies, sample_rate, nyquist_fade)


# ---------------------------------------------------------------------------------------------------------------
# Filtered noise
# ---------------------------------------------------------------------------------------------------------------
def filtered_noise_causal(magnitudes: torch.Tensor, noise: torch.Tensor, hop_size: int, window_size: int | None = None
                          ) -> torch.Tensor:
    """Filter consecutive ``hop_size`` blocks of noise with per-frame FIR filters and overlap-add the full outputs.

    Block ``j`` (samples ``j*hop .. (j+1)*hop``) lies between frames ``j`` and ``j+1`` and is filtered with the
    filter designed from the mean of their magnitudes. Each block's whole linear convolution, tail included, is
    overlap-added, so there are no seams between blocks. The output is causal: it lags by ``window_size // 2``.

    Args:
        magnitudes: [batch, segments + 1, n_bands] linear filter magnitudes, 0 Hz .. Nyquist.
        noise: [batch, segments * hop_size] excitation.
    Returns:
        [batch, segments * hop_size + window_size - 1]
    """
    batch, n_block = noise.shape
    n_segments = n_block // hop_size
    n_bands = magnitudes.shape[-1]
    taps = window_size or 2 * (n_bands - 1)
    magnitudes = 0.5 * (magnitudes[:, :n_segments] + magnitudes[:, 1:n_segments + 1])
    blocks = noise.reshape(batch, n_segments, hop_size)
    n_out = hop_size + taps - 1
    n_fft = 1 << (n_out - 1).bit_length()
    # Filter design (irfft, centring, Hann window) and the filters' rfft are one linear map of the magnitudes:
    # applied as a single matrix product it is about 3x faster than designing and transforming 15 000 small
    # filters per minute of audio, and gives the same spectra to float rounding.
    operator = _filter_spectrum_operator(n_bands, taps, n_fft, magnitudes.dtype, magnitudes.device)
    spectra = torch.view_as_complex((magnitudes @ operator).reshape(batch, n_segments, n_fft // 2 + 1, 2))
    filtered = torch.fft.irfft(torch.fft.rfft(F.pad(blocks, (0, n_fft - hop_size))) * spectra, n_fft)[..., :n_out]
    return overlap_add(filtered, hop_size)


_FILTER_OPERATORS: dict[tuple, torch.Tensor] = {}


def _filter_spectrum_operator(n_bands: int, taps: int, n_fft: int, dtype: torch.dtype, device: torch.device
                              ) -> torch.Tensor:
    """[n_bands, 2 * (n_fft // 2 + 1)] real matrix: magnitudes -> the ``n_fft``-point spectrum (real and imaginary
    parts interleaved) of :func:`frequency_impulse_response`'s ``taps``-tap filter. Cached; built in float64."""
    key = (n_bands, taps, n_fft, dtype, str(device))
    if key not in _FILTER_OPERATORS:
        # A normal tensor even when first built under inference mode, so that training can use the cached copy.
        with torch.inference_mode(False), torch.no_grad():
            identity = torch.eye(n_bands, dtype=torch.float64)
            spectra = torch.fft.rfft(frequency_impulse_response(identity, taps), n_fft)  # [n_bands, n_fft // 2 + 1]
            operator = torch.view_as_real(spectra).reshape(n_bands, -1).to(dtype=dtype, device=device)
        _FILTER_OPERATORS[key] = operator
    return _FILTER_OPERATORS[key]


NOISE_VARIANCE = 1.0 / 3.0  # of the default excitation, uniform in [-1, 1]


@functools.lru_cache(maxsize=8)
def filtered_noise_loudness_terms(n_bands: int, sample_rate: int = SAMPLE_RATE, n_fft: int = 512,
                                  dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
                                  ) -> torch.Tensor:
    """[n_fft // 2 + 1, n_bands, n_bands] ``dtype`` on ``device``: the loudness analysis's bins' shares of a
    quadratic form (computed in float64; cached per dtype and device, as the loudness match needs it every step).

    Summed over bins (each first scaled by a filter's power gain there, if the noise passes one), they give
    ``Q``: :func:`filtered_noise` with steady ``magnitudes`` [n_bands] reads ``NOISE_VARIANCE * magnitudes @ Q @
    magnitudes`` in :func:`mididdsp.dsp.compute_loudness` (mean square). Parseval over the A-weighted bins of the
    designed filter's ``n_fft``-point spectrum: exact for the filter's own output, to the analysis window's
    smoothing of the spectrum for the reading.
    """
    taps = 2 * (n_bands - 1)
    with torch.inference_mode(False), torch.no_grad():
        spectra = torch.fft.rfft(frequency_impulse_response(torch.eye(n_bands, dtype=torch.float64), taps), n_fft)
        weights = one_sided_a_weighting(n_fft, sample_rate) / n_fft             # [bins]
        terms = (weights[:, None, None] * spectra.T[:, :, None] * spectra.T.conj()[:, None, :]).real
        return terms.to(dtype=dtype, device=device)


def overlap_add(blocks: torch.Tensor, hop_size: int) -> torch.Tensor:
    """Sum blocks placed ``hop_size`` apart: [batch, count, length] -> [batch, (count - 1) * hop_size + length].

    Each block is cut into whole hops and the hops are added with shifted slices (a handful of additions),
    which is several times faster than ``torch.nn.functional.fold`` on CPU.
    """
    batch, count, length = blocks.shape
    per_block = -(-length // hop_size)
    blocks = F.pad(blocks, (0, per_block * hop_size - length)).reshape(batch, count, per_block, hop_size)
    out = blocks.new_zeros(batch, count + per_block - 1, hop_size)
    for part in range(per_block):
        out[:, part:part + count] += blocks[:, :, part]
    return out.reshape(batch, -1)[:, :(count - 1) * hop_size + length]


def filtered_noise(
    magnitudes: torch.Tensor,
    n_samples: int,
    hop_size: int | None = None,
    noise: torch.Tensor | None = None,
    window_size: int | None = None,
    generator: torch.Generator | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """Time-varying filtered noise (subtractive synthesis), aligned with the controls.

    Args:
        magnitudes: [batch, frames, n_bands] linear filter magnitudes at ``n_bands`` frequencies from 0 Hz to
            Nyquist (65 bands -> 128-tap filters).
        n_samples: output length.
        hop_size: samples per frame (default ``sample_rate / 250``).
        noise: [batch, n_samples] excitation (default uniform in [-1, 1] from ``generator``).
        window_size: filter taps (default ``2 * (n_bands - 1)``).
    Returns:
        [batch, n_samples] audio; the filters' linear-phase delay is compensated.
    """
    hop_size = hop_size or default_hop_size(sample_rate)
    batch, _, n_bands = magnitudes.shape
    taps = window_size or 2 * (n_bands - 1)
    delay = taps // 2
    if noise is None:
        noise = torch.rand(batch, n_samples, generator=generator, dtype=magnitudes.dtype, device=magnitudes.device) * 2 - 1
    n_segments = -(-int(n_samples) // hop_size)
    noise = F.pad(noise[:, :n_samples], (0, n_segments * hop_size - n_samples))
    magnitudes = _hold_last_frame(magnitudes, n_segments + 1)
    causal = filtered_noise_causal(magnitudes, noise, hop_size, taps)
    return causal[:, delay:delay + n_samples]
