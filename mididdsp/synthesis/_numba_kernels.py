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
def lane_powers(beta):
    """exp(beta)^1 .. exp(beta)^4: the four lanes' first powers (the last is also their stride)."""
    ratio = math.exp(beta)
    square = ratio * ratio
    return ratio, square, square * ratio, square * square


@numba.njit(nogil=True, cache=True)
def moments(scaled, beta):
    """(sum w_k, sum k w_k, sum k^2 w_k) of w_k = scaled_k exp(beta k), for K a multiple of 4 and |beta| K under
    POWER_LIMIT. Four lanes (harmonics k, k+1, k+2, k+3), each with its own power of exp(beta) stepping by
    exp(beta)^4 and its own sums: one chain of K products and three of K sums, each step waiting on the last, were
    the solve's critical path (4 lanes: the solve 20 % faster; 8 were slower)."""
    p0, p1, p2, p3 = lane_powers(beta)
    stride = p3
    t0 = t1 = t2 = t3 = f0 = f1 = f2 = f3 = s0 = s1 = s2 = s3 = 0.0
    for start in range(0, scaled.shape[0], 4):
        k = start + 1.0
        w0 = scaled[start] * p0
        w1 = scaled[start + 1] * p1
        w2 = scaled[start + 2] * p2
        w3 = scaled[start + 3] * p3
        t0 += w0
        t1 += w1
        t2 += w2
        t3 += w3
        f0 += w0 * k
        f1 += w1 * (k + 1.0)
        f2 += w2 * (k + 2.0)
        f3 += w3 * (k + 3.0)
        s0 += w0 * k * k
        s1 += w1 * (k + 1.0) * (k + 1.0)
        s2 += w2 * (k + 2.0) * (k + 2.0)
        s3 += w3 * (k + 3.0) * (k + 3.0)
        p0 *= stride
        p1 *= stride
        p2 *= stride
        p3 *= stride
    return (t0 + t1) + (t2 + t3), (f0 + f1) + (f2 + f3), (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True)
def lane_weights(scaled, beta, weights):
    """:func:`tilted` for K a multiple of 4 and |beta| K under POWER_LIMIT, in :func:`moments`' four lanes."""
    p0, p1, p2, p3 = lane_powers(beta)
    stride = p3
    for start in range(0, scaled.shape[0], 4):
        weights[start] = scaled[start] * p0
        weights[start + 1] = scaled[start + 1] * p1
        weights[start + 2] = scaled[start + 2] * p2
        weights[start + 3] = scaled[start + 3] * p3
        p0 *= stride
        p1 *= stride
        p2 *= stride
        p3 *= stride


@numba.njit(nogil=True, cache=True)
def solve(scaled, target, beta, weights, out):
    """One frame: ``scaled`` [K'] = exp(logit - a constant) (0: masked; zeros beyond the K harmonics of ``out``),
    ``target`` centroid, ``beta`` the start; writes the distribution to ``out`` [K] (float32) and returns the
    solved beta. ``weights`` [K']: scratch."""
    harmonics = scaled.shape[0]
    lanes = harmonics % 4 == 0
    low, high = -BRACKET, BRACKET
    beta = min(max(beta, low), high)
    for _ in range(MAX_STEPS):
        if lanes and abs(beta) * harmonics < POWER_LIMIT:
            total, first, second = moments(scaled, beta)
        else:
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
    if lanes and abs(beta) * harmonics < POWER_LIMIT:
        lane_weights(scaled, beta, weights)
    else:
        tilted(scaled, beta, weights)
    total = 0.0
    for k in range(harmonics):
        total += weights[k]
    for k in range(out.shape[0]):
        out[k] = np.float32(weights[k] / total)
    return beta


@numba.njit(nogil=True, cache=True)
def tilt(logits, centroid, out):
    """logits [F, K] float32 (masked at -1e4), centroid [F] -> out [F, K] float32 distributions."""
    frames, harmonics = logits.shape
    scaled = np.zeros(-(-harmonics // 4) * 4)  # zeros beyond K: the solve's four lanes
    weights = np.empty(scaled.shape[0])
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
    row = np.zeros(-(-harmonics // 4) * 4)  # zeros beyond K: the solve's four lanes
    weights = np.empty(row.shape[0])
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
