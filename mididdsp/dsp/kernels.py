"""Compiled inference kernels (numba) for the synthesizers' hot loops. No autograd: used when no gradient is
needed (rendering, resynthesis); training uses the tensor code in :mod:`mididdsp.dsp.synths`, which these match.

Harmonics come from a rotation recurrence instead of one ``sin`` per harmonic and sample: per sample,
``e^{i k theta} = e^{i (k-1) theta} * e^{i theta}`` in float32 (the error grows like k * 6e-8, -108 dB at k = 60),
with ``e^{i theta}`` from the float32 angle of the float64 phase by numpy's vectorised sin and cos (a rounding of
at most 1.2e-7 rad, k times that at harmonic k), so a sample costs two transcendental calls whatever the number of
harmonics. The kernels are serial and release the GIL: a render's parallelism is its voices (threads) and a
batch's its files (processes).

numba is imported on first use; :func:`available` says whether it can be.
"""
from __future__ import annotations

import functools

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
    from mididdsp.dsp import _numba_kernels

    return _numba_kernels.harmonic, _numba_kernels.phase


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
    # the fundamental's sine and cosine from its float32 angle, by numpy's vectorised float32 functions (libm's
    # float64 sin and cos, per sample in the kernel, cost more than 20 harmonics); the angle's rounding (at most
    # 1.2e-7 rad, k times that at harmonic k) is of the order of the recurrence's own
    angle = (2.0 * np.pi * np.asarray(phase_cycles, np.float64)).astype(np.float32)
    _compiled()[0](np.sin(angle), np.cos(angle), np.ascontiguousarray(f0_samples, np.float32),
                np.ascontiguousarray(harmonic_amplitudes, np.float32), np.ascontiguousarray(next_weight, np.float32),
                np.ascontiguousarray(fade_weight, np.float32), float(sample_rate) / 2.0, float(max(nyquist_fade, 0.0)),
                out)
    return out
