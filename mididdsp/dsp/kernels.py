"""Compiled inference kernels (numba) for the synthesizers' hot loops. No autograd: used when no gradient is
needed (rendering, resynthesis); training uses the tensor code in :mod:`mididdsp.dsp.synths`, which these match.

Harmonics come from a rotation recurrence instead of one ``sin`` per harmonic and sample: per sample,
``e^{i k theta} = e^{i (k-1) theta} * e^{i theta}`` in float32 (the error grows like k * 6e-8, -108 dB at k = 60),
with ``e^{i theta}`` from the float32 angle of the float64 phase by numpy's vectorised sin and cos (a rounding of
at most 1.2e-7 rad, k times that at harmonic k), so a sample costs two transcendental calls whatever the number of
harmonics. The kernels are serial and release the GIL: a render's parallelism is its voices (threads) and a
batch's its files (processes).

:func:`dry_synthesis` is a render's whole run of frames in one pass (harmonic plus filtered noise, no reverb): the
synthesizer's streaming tensor code, which it equals to float rounding, spent most of its time in per-piece torch
calls around the kernels.

numba is imported on first use; :func:`available` says whether it can be.
"""
from __future__ import annotations

import functools

import numpy as np

from mididdsp import native
from mididdsp.native import DSP, kernel

PHASE_BLOCK = 64  # samples the running phase sums unwrapped (at most 0.5 cycle each)
NOISE_DESIGN_BLOCK = 2048  # segments whose noise filters are designed at once
DRY_CHUNK_FRAMES = 4096  # frames of a run's oscillator work at a time (16 s at 250 frames a second)


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether the compiled kernels can run here: built ahead of time (:mod:`mididdsp.native`), or numba to
    compile them."""
    if native.built():
        return True
    try:
        import numba  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use the tensor code
        return False
    return True


GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: 2^64 / the golden ratio, odd


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Stafford's "Mix13") of uint64 values: every input bit reaches every output bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def noise_key(seed: int) -> int:
    """The 64-bit start of ``seed``'s noise stream: the seed mixed, so that nearby seeds' streams are unrelated (with
    ``seed * GOLDEN_GAMMA`` as the start, seed ``s + 1`` would be seed ``s``'s stream one sample later)."""
    with np.errstate(over="ignore"):
        return int(_mix64(np.array([int(seed) % (1 << 64)], np.uint64))[0])


def uniform_noise_reference(seed: int, first_sample: int, n_samples: int) -> np.ndarray:
    """Uniform noise in [-1, 1) as a pure function of ``seed`` and the absolute sample (numpy; the oracle of
    :func:`uniform_noise`, which gives the same bits faster).

    Sample ``s`` is splitmix64's output number ``s + 1`` from the state :func:`noise_key` (``seed``): the finaliser
    of ``key + (s + 1) * GOLDEN_GAMMA``, a counter-based generator, so any window of samples is computed on its own
    and reads what a longer window holds there. Its top 24 bits give ``k / 2^23 - 1``, exact in float32.

    Returns:
        [n_samples] float32 in [-1, 1).
    """
    counter = np.arange(1, n_samples + 1, dtype=np.uint64) + np.uint64(first_sample)
    with np.errstate(over="ignore"):
        z = _mix64(np.uint64(noise_key(seed)) + counter * np.uint64(GOLDEN_GAMMA))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 23)) - np.float32(1.0)


def uniform_noise(seed: int, first_sample: int, n_samples: int) -> np.ndarray:
    """:func:`uniform_noise_reference`'s bits, compiled (1 ns a sample; torch's generator, seeded per block of
    samples, took 4-6), or by numpy where numba is not installed."""
    if not available():
        return uniform_noise_reference(seed, first_sample, n_samples)
    out = np.empty(n_samples, np.float32)
    kernel(DSP, "uniform_noise")(np.uint64(noise_key(seed)), np.uint64(first_sample), out)
    return out


def wrapped_phase(f0_samples: np.ndarray, sample_rate: int, initial_phase: np.ndarray | None = None):
    """(phase [batch, samples] float64 cycles in [-0.5, 0.5), final phase [batch]) of oscillators at ``f0_samples``."""
    initial = np.zeros(f0_samples.shape[0]) if initial_phase is None else np.asarray(initial_phase, np.float64)
    out = np.empty(f0_samples.shape, np.float64)
    final = kernel(DSP, "phase")(np.ascontiguousarray(f0_samples, np.float64), float(sample_rate), initial, out)
    return out, final


def harmonic_block(phase_cycles: np.ndarray, f0_samples: np.ndarray, harmonic_amplitudes: np.ndarray,
                   next_weight: np.ndarray, sample_rate: int, nyquist_fade: float,
                   fade_weight: np.ndarray | None = None) -> np.ndarray:
    """Harmonic audio of whole segments (see ``synths._harmonic_block``, which this equals to ~1e-6).

    Args:
        phase_cycles: [batch, segments * hop] float64 phase in cycles.
        f0_samples: [batch, segments * hop] Hz.
        harmonic_amplitudes: [batch, segments + 1, n_harmonics] per-frame amplitude of each harmonic.
        next_weight: [hop] weight of the next frame inside a segment.
        fade_weight: [hop] the same for a harmonic in the segments where it enters the Nyquist fade band
            (default ``next_weight``).
    Returns:
        [batch, segments * hop] float32 audio.
    """
    out = np.empty(phase_cycles.shape, dtype=np.float32)
    fade_weight = next_weight if fade_weight is None else fade_weight
    # the fundamental's sine and cosine from its float32 angle, by numpy's vectorised float32 functions (libm's
    # float64 sin and cos, per sample in the kernel, cost more than 20 harmonics); the angle's rounding (at most
    # 1.2e-7 rad, k times that at harmonic k) is of the order of the recurrence's own
    angle = (2.0 * np.pi * np.asarray(phase_cycles, np.float64)).astype(np.float32)
    kernel(DSP, "harmonic")(np.sin(angle), np.cos(angle), np.ascontiguousarray(f0_samples, np.float32),
                np.ascontiguousarray(harmonic_amplitudes, np.float32), np.ascontiguousarray(next_weight, np.float32),
                np.ascontiguousarray(fade_weight, np.float32), float(sample_rate) / 2.0, float(max(nyquist_fade, 0.0)),
                out)
    return out


@functools.lru_cache(maxsize=4)
def noise_taps_operator(n_bands: int, taps: int) -> np.ndarray:
    """[n_bands, taps // 2 + 1] float32: magnitudes -> taps 0 .. taps // 2 of ``frequency_impulse_response``'s
    filter (it is linear in them; built in float64). The filter is symmetric, tap ``taps - t`` equal to tap ``t``
    (tests/test_dsp_synths.py), so its other half needs no product."""
    # frequency_impulse_response (mididdsp.dsp.core) of each unit magnitude vector, in numpy: a zero-phase
    # response centred on tap 0, taps -half .. taps - half - 1 taken, a periodic Hann window peaking at tap half
    full_size = 2 * (n_bands - 1)
    if not 1 < taps <= full_size:
        raise ValueError(f"taps must be in (1, {full_size}], got {taps}")
    response = np.fft.irfft(np.eye(n_bands, dtype=np.complex128), full_size)
    half = taps // 2
    response = np.concatenate([response[:, full_size - half:], response[:, :taps - half]], axis=1)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(taps) / taps)
    full = (response * window).astype(np.float32)
    return np.ascontiguousarray(full[:, :taps // 2 + 1])


def dry_synthesis(f0_hz: np.ndarray, amplitude: np.ndarray, harmonic_distribution: np.ndarray,
                  noise_magnitudes: np.ndarray, excitation: np.ndarray, hop_size: int, sample_rate: int,
                  nyquist_fade: float, amplitude_upsampling: str = "hann",
                  chunk_frames: int = DRY_CHUNK_FRAMES) -> np.ndarray:
    """Harmonic plus filtered noise of ``F`` frames in one pass: what ``StreamingRenderer`` without reverb returns
    for them, given ``excitation`` and phase 0 at frame 0 (equal to float rounding; tests/test_dsp_synths.py).

    Args:
        f0_hz, amplitude: [F] Hz and linear.
        harmonic_distribution: [F, n_harmonics] non-negative weights (renormalised here below Nyquist).
        noise_magnitudes: [F, n_bands] linear filter magnitudes, 0 Hz .. Nyquist.
        excitation: [(F - 1) * hop_size] the noise filters' input.
        chunk_frames: frames of oscillator work at a time (the phase carried across): the working memory beside
            the output and the excitation is bounded by it, whatever the run's length.
    Returns:
        [(F - 1) * hop_size] float32 audio, the noise's linear-phase delay compensated.
    """
    frames = f0_hz.shape[0]
    n_samples = max(frames - 1, 0) * hop_size
    out = np.zeros(n_samples, np.float32)
    if n_samples == 0:
        return out
    frame_amplitudes, noise_add, oscillator_angle = (kernel(DSP, name) for name in (
        "harmonic_frame_amplitudes", "filtered_noise_add", "oscillator_angle"))
    f0 = np.ascontiguousarray(f0_hz, np.float32)
    amplitude = np.ascontiguousarray(amplitude, np.float32)
    harmonic_distribution = np.ascontiguousarray(harmonic_distribution, np.float32)
    position = np.arange(hop_size, dtype=np.float32) / np.float32(hop_size)
    if amplitude_upsampling == "hann":
        next_weight = np.sin(np.float32(0.5 * np.pi) * position) ** 2
    elif amplitude_upsampling == "linear":
        next_weight = position
    else:
        raise ValueError(f"unknown amplitude_upsampling {amplitude_upsampling!r}; expected 'hann' or 'linear'")
    nyquist, fade = float(sample_rate) / 2.0, float(max(nyquist_fade, 0.0))
    # the harmonic part chunk by chunk (it writes its samples; the noise is added after, as it reaches 64 samples
    # into the neighbouring chunks)
    phase, chunk_frames = 0.0, max(1, int(chunk_frames))
    for first in range(0, frames - 1, chunk_frames):
        stop = min(first + chunk_frames, frames - 1)  # segments first .. stop - 1
        count = (stop - first) * hop_size
        f0_samples = np.empty((1, count), np.float32)
        angle = np.empty(count, np.float32)
        phase = oscillator_angle(f0[first:stop + 1], position, float(sample_rate), phase, f0_samples[0], angle)
        amplitudes = np.empty((1, stop + 1 - first, harmonic_distribution.shape[1]), np.float32)
        frame_amplitudes(f0[first:stop + 1], amplitude[first:stop + 1], harmonic_distribution[first:stop + 1],
                         nyquist, fade, amplitudes[0])
        kernel(DSP, "harmonic")(np.sin(angle)[None], np.cos(angle)[None], f0_samples, amplitudes, next_weight, position,
                       nyquist, fade, out[None, first * hop_size:stop * hop_size])
    n_bands = noise_magnitudes.shape[-1]
    taps = 2 * (n_bands - 1)
    # The filters of the frames, designed per block by one matrix product (the design is linear in the magnitudes;
    # numpy's BLAS); the kernel takes each segment's as the mean of its two frames'.
    # Only taps 0 .. taps / 2 are designed: the filters are symmetric (linear phase). A block bounds the working
    # memory.
    operator = noise_taps_operator(n_bands, taps)
    magnitudes = np.ascontiguousarray(noise_magnitudes, np.float32)
    excitation = np.ascontiguousarray(excitation, np.float32)
    for first in range(0, frames - 1, NOISE_DESIGN_BLOCK):
        stop = min(first + NOISE_DESIGN_BLOCK, frames - 1)
        noise_add(magnitudes[first:stop + 1] @ operator, excitation, first, hop_size, taps // 2, out)
    return out
