"""The compiled bodies of :mod:`mididdsp.synthesis.kernels` (that module imports this one on first use; this one
imports numba). At module level so that numba's on-disk cache serves every process: defined inside a function,
whose functions call each other as closure variables, they missed the cache and compiled again in every process
(1.2-1.5 s of every render)."""
import math

import numba
import numpy as np

from mididdsp.synthesis.kernels import BRACKET, MAX_STEPS, POWER_LIMIT, STEP_TOLERANCE


@numba.njit(nogil=True, cache=True)
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


@numba.njit(nogil=True, cache=True)
def solve(scaled, target, beta, weights, out):
    """One frame: ``scaled`` [K] = exp(logit - max) (0: masked), ``target`` centroid, ``beta`` the start;
    writes the distribution to ``out`` [K] (float32) and returns the solved beta."""
    harmonics = scaled.shape[0]
    low, high = -BRACKET, BRACKET
    beta = min(max(beta, low), high)
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
        out[k] = np.float32(weights[k] / total)
    return beta


@numba.njit(nogil=True, cache=True)
def tilt(logits, centroid, out):
    """logits [F, K] float32 (masked at -1e4), centroid [F] -> out [F, K] float32 distributions."""
    frames, harmonics = logits.shape
    scaled = np.empty(harmonics)
    weights = np.empty(harmonics)
    beta = 0.0  # each frame starts from the previous frame's solution: neighbours differ little
    for f in range(frames):
        top = logits[f, 0]
        for k in range(harmonics):
            top = max(top, logits[f, k])
        for k in range(harmonics):
            scaled[k] = math.exp(np.float32(logits[f, k] - top))
        beta = solve(scaled, float(centroid[f]), beta, weights, out[f])
    return out


@numba.njit(nogil=True, cache=True)
def tilt_kept(scaled, highest, centroid, out):
    """scaled [F, K] float32 = exp(logit - a constant), highest [F] (harmonics kept: the first ``highest``; the
    rest weigh 0), centroid [F] -> out [F, K] float32."""
    frames, harmonics = scaled.shape
    row = np.empty(harmonics)
    weights = np.empty(harmonics)
    beta = 0.0
    for f in range(frames):
        kept = min(max(int(highest[f]), 1), harmonics)
        for k in range(kept):
            row[k] = scaled[f, k]
        for k in range(kept, harmonics):
            row[k] = 0.0
        beta = solve(row, float(centroid[f]), beta, weights, out[f])
    return out


@numba.njit(nogil=True, cache=True)
def nyquist_count(f0, n_harmonics, limit, out):
    """f0 [F] float32 (Hz), limit float32 -> out [F]: the number of k in 1..n_harmonics with float32 f0 * k < limit
    (at least 1)."""
    for f in range(f0.shape[0]):
        count = 0
        for k in range(1, n_harmonics + 1):
            if f0[f] * np.float32(k) < limit:
                count += 1
        out[f] = max(count, 1)
    return out


@numba.njit(nogil=True, fastmath=True, cache=True)
def layer_norm_leaky(hidden, weight, bias, eps, slope, out):
    """out = leaky_relu(layer_norm(hidden) * weight + bias, slope) per row: hidden, out [T, C] float32; weight,
    bias [C]. One pass over each row in cache (torch: a norm pass, then an activation pass over [T, C])."""
    frames, channels = hidden.shape
    for t in range(frames):
        total = np.float32(0.0)
        for c in range(channels):
            total += hidden[t, c]
        mean = total / channels
        spread = np.float32(0.0)
        for c in range(channels):
            centred = hidden[t, c] - mean
            spread += centred * centred
        scale = np.float32(1.0) / np.sqrt(spread / channels + eps)
        for c in range(channels):
            value = (hidden[t, c] - mean) * scale * weight[c] + bias[c]
            out[t, c] = value if value >= 0.0 else value * slope
    return out
