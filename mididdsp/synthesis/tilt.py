"""The centroid tilt of the synthesis generator without autograd: one compiled pass per frame (numba).

:func:`mididdsp.synthesis.generator.tilt_to_centroid` finds, per frame, the ``beta`` for which
``h = softmax(logits + beta k)`` has the centroid ``sum_k k h_k`` asked for, with batched torch Newton steps (a
softmax over all harmonics of every open frame per step, convergence checked every 4 steps). In inference no
gradient is needed, so here each frame is solved on its own in float64 (one exp per harmonic, then the tilt
``exp(beta)^k`` by products): Newton steps inside a shrinking bracket, started from the previous frame's ``beta`` (neighbouring frames differ little, so most frames take 2-3 steps), run
until the step is below float32 resolution. The result is the exact solution rounded to float32, which the torch
solve approaches to :data:`~mididdsp.synthesis.generator.TILT_TOLERANCE` and then a last Newton step: the two agree
to float rounding (tests/test_synthesis_generator.py), and the start does not change the result beyond it.

numba is imported on first use; :func:`available` says whether it can be.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

BRACKET = 30.0        # |beta| bound, as in the torch solve
MAX_STEPS = 60        # Newton or bisection steps per frame (bisection alone would need about 40 to reach 1e-10)
STEP_TOLERANCE = 1e-10  # |beta change| at which a frame is solved (far below what float32 output resolves)
POWER_LIMIT = 600.0   # |beta| * K below which exp(beta)^k is formed by products (exp(600) fits float64's range)


@functools.lru_cache(maxsize=1)
def available() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use the torch solve
        return False
    return True


@functools.lru_cache(maxsize=1)
def _compiled():
    import math

    import numba

    @numba.njit(cache=True)
    def tilted(scaled, beta, weights):
        """weights_k = scaled_k * exp(beta k), k = 1..K, up to one common factor (float64, no overflow)."""
        harmonics = scaled.shape[0]
        if abs(beta) * harmonics < POWER_LIMIT:  # exp(beta)^k stays inside float64's range: products, no exp
            power = 1.0
            ratio = math.exp(beta)
            for k in range(harmonics):
                power *= ratio
                weights[k] = scaled[k] * power
        else:  # a steep tilt (rare): exponents shifted by the largest of the unmasked harmonics (scaled > 0)
            shift = -1e300
            for k in range(harmonics):
                if scaled[k] > 0.0:
                    shift = max(shift, math.log(scaled[k]) + beta * (k + 1))
            for k in range(harmonics):
                weights[k] = scaled[k] * math.exp(beta * (k + 1) - shift) if scaled[k] > 0.0 else 0.0

    @numba.njit(cache=True)
    def tilt(logits, centroid, out):
        """logits [F, K] float32, centroid [F] float32 -> out [F, K] float32 distributions."""
        frames, harmonics = logits.shape
        scaled = np.empty(harmonics)      # exp(logit - max logit): one exp per harmonic and frame
        weights = np.empty(harmonics)
        beta = 0.0
        for f in range(frames):
            target = float(centroid[f])
            top = logits[f, 0]
            for k in range(harmonics):
                top = max(top, logits[f, k])
            for k in range(harmonics):
                scaled[k] = math.exp(np.float32(logits[f, k] - top))
            low, high = -BRACKET, BRACKET
            beta = min(max(beta, low), high)  # from the previous frame's solution: neighbours differ little
            for _ in range(MAX_STEPS):
                tilted(scaled, beta, weights)
                total = first = second = 0.0
                for k in range(harmonics):
                    total += weights[k]
                    first += weights[k] * (k + 1)
                    second += weights[k] * (k + 1) * (k + 1)
                mean = first / total
                variance = second / total - mean * mean
                if mean > target:
                    high = beta
                else:
                    low = beta
                step = beta - (mean - target) / variance if variance > 1e-300 else low - 1.0
                if not (low < step < high):  # outside the shrinking bracket: bisect instead
                    step = 0.5 * (low + high)
                change = abs(step - beta)
                beta = step
                if change < STEP_TOLERANCE:
                    break
            tilted(scaled, beta, weights)
            total = 0.0
            for k in range(harmonics):
                total += weights[k]
            for k in range(harmonics):
                out[f, k] = np.float32(weights[k] / total)
        return out

    return tilt


def tilt_to_centroid_inference(logits: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """``softmax(logits + beta k)`` with ``beta`` per frame such that the centroid is ``centroid`` (no gradient).

    Args:
        logits: [..., K] float32 harmonic logits (masked harmonics at -1e4).
        centroid: [...] target centroid in harmonic numbers, reachable (1 .. the highest unmasked harmonic).
    Returns:
        [..., K] float32 distributions (each sums to 1).
    """
    shape = logits.shape
    flat = np.ascontiguousarray(logits.detach().reshape(-1, shape[-1]).numpy(), dtype=np.float32)
    target = np.ascontiguousarray(centroid.detach().reshape(-1).numpy(), dtype=np.float32)
    out = np.empty_like(flat)
    _compiled()(flat, target, out)
    return torch.from_numpy(out).reshape(shape)
