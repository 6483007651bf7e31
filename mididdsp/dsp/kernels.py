"""Compiled inference kernels (numba) for the synthesizers' hot loops. No autograd: used when no gradient is
needed (rendering, resynthesis); training uses the tensor code in :mod:`mididdsp.dsp.synths`, which these match.

Harmonics come from a rotation recurrence instead of one ``sin`` per harmonic and sample: per sample,
``e^{i k theta} = e^{i (k-1) theta} * e^{i theta}`` in float32 (the error grows like k * 6e-8, -108 dB at k = 60),
with ``e^{i theta}`` from the float32 angle of the float64 phase by numpy's vectorised sin and cos (a rounding of
at most 1.2e-7 rad, k times that at harmonic k), so a sample costs two transcendental calls whatever the number of
harmonics. Work is spread over (item, segment) pairs with ``prange``.

numba is imported on first use; :func:`available` says whether it can be.
"""
from __future__ import annotations

import functools
import math

import numpy as np

PHASE_BLOCK = 64  # samples the running phase sums unwrapped (at most 0.5 cycle each)


@functools.lru_cache(maxsize=1)
def available() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use the tensor code
        return False
    return True


@functools.lru_cache(maxsize=1)
def _compiled():
    import numba

    @numba.njit(fastmath=True, cache=True)
    def _raised_cosine(position):
        """0.5 - 0.5 cos(pi x) = sin(pi x / 2)^2 for x in [0, 1], by sin's Taylor series to t^13 (error under
        1e-9; libm's cos per sample and fade-band harmonic cost more than all the other harmonics together)."""
        t = 0.5 * math.pi * position
        t2 = t * t
        sine = t * (1.0 + t2 * (-1.0 / 6 + t2 * (1.0 / 120 + t2 * (-1.0 / 5040 + t2 * (
            1.0 / 362880 + t2 * (-1.0 / 39916800 + t2 * (1.0 / 6227020800)))))))
        return sine * sine

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def harmonic(sines, cosines, f0, amplitudes, next_weight, fade_weight, nyquist, fade, out):
        """sines / cosines of the fundamental's angle (float32) / f0 (Hz) [B, S*hop]; amplitudes [B, S+1, K];
        next_weight, fade_weight [hop] (fade_weight for the harmonics in the fade band); out [B, S*hop]."""
        batch, n_block = sines.shape
        hop = next_weight.shape[0]
        segments = n_block // hop
        n_harmonics = amplitudes.shape[2]
        fade_start = (1.0 - fade) * nyquist
        for index in numba.prange(batch * segments):
            item = index // segments
            segment = index % segments
            base = segment * hop
            # float32 recurrence: 8 lanes per AVX2 register; its error grows like k * 6e-8 (-108 dB at k = 60),
            # while the fundamental's angle itself comes from the float64 phase.
            sin_1 = np.empty(hop, np.float32)
            cos_1 = np.empty(hop, np.float32)
            sin_k = np.empty(hop, np.float32)
            cos_k = np.empty(hop, np.float32)
            total = np.zeros(hop, np.float32)
            lowest = 1e30
            highest = 0.0
            for n in range(hop):
                sin_1[n] = sines[item, base + n]
                cos_1[n] = cosines[item, base + n]
                sin_k[n] = sin_1[n]
                cos_k[n] = cos_1[n]
                frequency = abs(f0[item, base + n])
                lowest = min(lowest, frequency)
                highest = max(highest, frequency)
            last = n_harmonics if lowest <= 0.0 else min(n_harmonics, int(math.ceil(nyquist / lowest)))
            safe = last if highest <= 0.0 else min(last, int(math.floor(fade_start / highest)))
            for k in range(1, last + 1):
                start = amplitudes[item, segment, k - 1]
                step = amplitudes[item, segment + 1, k - 1] - start
                if k <= safe:  # one fused pass: accumulate harmonic k, rotate to harmonic k + 1
                    for n in range(hop):
                        total[n] += (start + step * next_weight[n]) * sin_k[n]
                        rotated = sin_k[n] * cos_1[n] + cos_k[n] * sin_1[n]
                        cos_k[n] = cos_k[n] * cos_1[n] - sin_k[n] * sin_1[n]
                        sin_k[n] = rotated
                else:  # the fade band near Nyquist: per-sample gain, zero at and above Nyquist; fade_weight
                    for n in range(hop):
                        frequency = k * abs(f0[item, base + n])
                        if frequency < nyquist:
                            gain = 1.0
                            if fade > 0.0 and frequency > fade_start:
                                position = (nyquist - frequency) / (fade * nyquist)
                                gain = _raised_cosine(position)
                            total[n] += (start + step * fade_weight[n]) * sin_k[n] * gain
                        rotated = sin_k[n] * cos_1[n] + cos_k[n] * sin_1[n]
                        cos_k[n] = cos_k[n] * cos_1[n] - sin_k[n] * sin_1[n]
                        sin_k[n] = rotated
            for n in range(hop):
                out[item, base + n] = total[n]

    @numba.njit(cache=True)
    def phase(f0, sample_rate, initial, out):
        """Running phase in cycles, wrapped (float64): out[b, n] = phase before sample n. The sum runs unwrapped
        through blocks of PHASE_BLOCK samples (below 2^6 cycles: float64 keeps 1e-14 of a cycle) and each block is
        wrapped after it, which takes the wrap out of the sum's dependency chain (3x faster)."""
        final = np.empty(f0.shape[0])
        samples = f0.shape[1]
        for item in range(f0.shape[0]):
            value = initial[item]
            for first in range(0, samples, PHASE_BLOCK):
                stop = min(first + PHASE_BLOCK, samples)
                for n in range(first, stop):
                    out[item, n] = value
                    value += f0[item, n] / sample_rate
                for n in range(first, stop):
                    out[item, n] -= math.floor(out[item, n] + 0.5)
                value -= math.floor(value + 0.5)
            final[item] = value
        return final

    return harmonic, phase


def _follow_torch_threads() -> None:
    """numba's threads for this call: as many as torch's (``OMP_NUM_THREADS``, ``train.threads``, a batch worker's
    one), at most numba's pool. Left at numba's default (every core), the pool's idle threads spun against a
    one-thread training on a shared 2-core machine (the OpenMP layer's workers spin between calls): a
    generator step went from 0.8 to 2.8 CPU seconds, half of it in that idle thread."""
    import numba
    import torch

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def wrapped_phase(f0_samples: np.ndarray, sample_rate: int, initial_phase: np.ndarray | None = None):
    """(phase [batch, samples] float64 cycles in [-0.5, 0.5), final phase [batch]) of oscillators at ``f0_samples``."""
    initial = np.zeros(f0_samples.shape[0]) if initial_phase is None else np.asarray(initial_phase, np.float64)
    out = np.empty(f0_samples.shape, np.float64)
    final = _compiled()[1](np.ascontiguousarray(f0_samples, np.float64), float(sample_rate), initial, out)
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
    _follow_torch_threads()
    # the fundamental's sine and cosine from its float32 angle, by numpy's vectorised float32 functions (libm's
    # float64 sin and cos, per sample in the kernel, cost more than 20 harmonics); the angle's rounding (at most
    # 1.2e-7 rad, k times that at harmonic k) is of the order of the recurrence's own
    angle = (2.0 * np.pi * np.asarray(phase_cycles, np.float64)).astype(np.float32)
    _compiled()[0](np.sin(angle), np.cos(angle), np.ascontiguousarray(f0_samples, np.float32),
                np.ascontiguousarray(harmonic_amplitudes, np.float32), np.ascontiguousarray(next_weight, np.float32),
                np.ascontiguousarray(fade_weight, np.float32), float(sample_rate) / 2.0, float(max(nyquist_fade, 0.0)),
                out)
    return out
