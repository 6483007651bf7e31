"""The synthesis generator's per-frame stages compiled for inference (numba): no gradient, CPU.

Training runs the tensor code in :mod:`mididdsp.synthesis.generator`, which these equal to float rounding
(tests/test_synthesis_generator.py). In a render the generator's cost is per frame, and outside its convolutions
most of it was elementwise passes over [T, 60] and [T, 65] tensors and the centroid solve; here each frame is one
pass:

* the centroid tilt. :func:`~mididdsp.synthesis.generator.tilt_to_centroid` finds, per frame, the ``beta`` for
  which ``h = softmax(logits + beta k)`` has the centroid asked for, with batched torch Newton steps (a softmax
  over all harmonics of every open frame per step, convergence checked every 4 steps). Here each frame is solved
  on its own in float64 (one exp per harmonic, then the tilt ``exp(beta)^k`` by products): Newton steps inside a
  shrinking bracket, started from the previous frame's ``beta`` (neighbouring frames differ little, so most frames
  take 2-3 steps), until the step is below float32 resolution. The result is the exact solution rounded to
  float32; the torch solve approaches it to :data:`~mididdsp.synthesis.generator.TILT_TOLERANCE` and then takes a
  last Newton step, so the two agree to float rounding, whatever the start.
* the harmonic distribution from the network's raw outputs (squash, de-tilt, Nyquist mask, centroid clamp, tilt);
* the noise bands' magnitudes (band shape, its mean removed, the silence, dB to linear);
* the stack's per-frame channel norm and leaky ReLU.

numba is imported on first use; :func:`available` says whether it can be.
"""
from __future__ import annotations

import functools
import math

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
    except Exception:  # noqa: BLE001 - any import failure means: use the tensor code
        return False
    return True


@functools.lru_cache(maxsize=1)
def _compiled() -> dict:
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

    @numba.njit(cache=True)
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

    @numba.njit(cache=True)
    def harmonic(raw, f0, wanted, squash, nyquist_limit, out):
        """raw [F, K] network outputs, f0 [F] Hz, wanted [F] centroid (>= 1) -> out [F, K] distributions:
        logits = squash * tanh(raw / squash) minus their least-squares line in k (generator._without_tilt),
        harmonics with f0 * k >= nyquist_limit masked (float32 product, as the tensor code), the centroid
        clamped to the highest unmasked harmonic, then the tilt."""
        frames, harmonics = raw.shape
        slope = np.empty(harmonics)  # the de-tilt's unit vector over k
        middle = (harmonics - 1) / 2.0
        norm = 0.0
        for k in range(harmonics):
            slope[k] = k - middle
            norm += slope[k] * slope[k]
        for k in range(harmonics):
            slope[k] /= math.sqrt(norm)
        logits = np.empty(harmonics)
        scaled = np.empty(harmonics)
        weights = np.empty(harmonics)
        beta = 0.0
        for f in range(frames):
            highest = 0
            for k in range(harmonics):
                if np.float32(f0[f]) * np.float32(k + 1) < nyquist_limit:
                    highest += 1
            mean = 0.0
            for k in range(harmonics):
                logits[k] = squash * math.tanh(raw[f, k] / squash)
                mean += logits[k]
            mean /= harmonics
            along = 0.0
            for k in range(harmonics):
                logits[k] -= mean
                along += logits[k] * slope[k]
            # all harmonics above Nyquist (f0 > 7.6 kHz): the tensor code's tilt puts all on the first one
            unmasked = max(highest, 1)
            top = -1e300
            for k in range(unmasked):
                logits[k] -= along * slope[k]
                top = max(top, logits[k])
            for k in range(harmonics):
                scaled[k] = math.exp(logits[k] - top) if k < unmasked else 0.0
            target = min(float(wanted[f]), float(unmasked))
            beta = solve(scaled, target, beta, weights, out[f])
        return out

    @numba.njit(cache=True)
    def noise(raw, level, spread, silent, shape_db, silence_db, out):
        """raw [F, M] network outputs, level / spread [F], silent [F] bool -> out [F, M] linear magnitudes:
        dB = level + band - mean(band), band = shape_db * spread * tanh(raw / 3); silence_db where silent."""
        frames, bands = raw.shape
        shape = np.empty(bands)
        for f in range(frames):
            if silent[f]:
                value = np.float32(10.0 ** (silence_db / 20.0))
                for m in range(bands):
                    out[f, m] = value
                continue
            mean = 0.0
            for m in range(bands):
                shape[m] = shape_db * spread[f] * math.tanh(raw[f, m] / 3.0)
                mean += shape[m]
            mean /= bands
            for m in range(bands):
                out[f, m] = np.float32(math.exp((level[f] + shape[m] - mean) * (math.log(10.0) / 20.0)))
        return out

    @numba.njit(cache=True, fastmath=True)
    def norm_leaky(x, weight, bias, eps, slope, out):
        """x [B, C, T] -> out [B, C, T]: per frame, LayerNorm over the C channels, then leaky ReLU."""
        batch, channels, frames = x.shape
        mean = np.empty(frames)
        scale = np.empty(frames)
        for b in range(batch):
            mean[:] = 0.0
            for c in range(channels):
                for t in range(frames):
                    mean[t] += x[b, c, t]
            for t in range(frames):
                mean[t] /= channels
            scale[:] = 0.0
            for c in range(channels):
                for t in range(frames):
                    d = x[b, c, t] - mean[t]
                    scale[t] += d * d
            for t in range(frames):
                scale[t] = 1.0 / math.sqrt(scale[t] / channels + eps)
            for c in range(channels):
                for t in range(frames):
                    value = (x[b, c, t] - mean[t]) * scale[t] * weight[c] + bias[c]
                    out[b, c, t] = value if value >= 0.0 else slope * value
        return out

    return {"tilt": tilt, "harmonic": harmonic, "noise": noise, "norm_leaky": norm_leaky}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy()


def tilt_to_centroid_inference(logits: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """``softmax(logits + beta k)`` with ``beta`` per frame such that the centroid is ``centroid`` (no gradient).

    Args:
        logits: [..., K] float32 harmonic logits (masked harmonics at -1e4).
        centroid: [...] target centroid in harmonic numbers, reachable (1 .. the highest unmasked harmonic).
    Returns:
        [..., K] float32 distributions (each sums to 1).
    """
    shape = logits.shape
    flat = np.ascontiguousarray(_numpy(logits.reshape(-1, shape[-1])), dtype=np.float32)
    out = torch.empty(flat.shape)  # torch's allocation (aligned as oneDNN wants it), written through numpy
    _compiled()["tilt"](flat, np.ascontiguousarray(_numpy(centroid.reshape(-1)), dtype=np.float32), out.numpy())
    return out.reshape(shape)


def harmonic_distribution(raw: torch.Tensor, f0_hz: torch.Tensor, wanted: torch.Tensor, squash: float,
                          nyquist_limit: float) -> torch.Tensor:
    """The generator's harmonic distribution from its raw harmonic outputs (see ``harmonic`` in ``_compiled``).

    Args:
        raw: [B, T, K] network outputs (any strides); f0_hz: [B, T] Hz; wanted: [B, T] centroid asked for
            (harmonic numbers, >= 1; clamped here to the highest harmonic under ``nyquist_limit`` Hz).
    Returns:
        [B, T, K] float32 distributions.
    """
    batch, frames, harmonics = raw.shape
    out = torch.empty(batch, frames, harmonics)
    _compiled()["harmonic"](_numpy(raw.reshape(batch * frames, harmonics)), _numpy(f0_hz.reshape(-1)),
                            _numpy(wanted.reshape(-1)), float(squash), np.float32(nyquist_limit),
                            out.numpy().reshape(batch * frames, harmonics))
    return out


def noise_magnitudes(raw: torch.Tensor, level_db: torch.Tensor, spread: torch.Tensor, silent: torch.Tensor,
                     shape_db: float, silence_db: float) -> torch.Tensor:
    """Linear noise-band magnitudes [B, T, M] from the raw band outputs [B, T, M], the noise level [B, T] (dB),
    the bands' spread [B, T] (0..1) and the silent frames [B, T] bool (at ``silence_db``)."""
    batch, frames, bands = raw.shape
    out = torch.empty(batch, frames, bands)
    _compiled()["noise"](_numpy(raw.reshape(batch * frames, bands)), _numpy(level_db.reshape(-1)),
                         _numpy(spread.reshape(-1)), _numpy(silent.reshape(-1)), float(shape_db), float(silence_db),
                         out.numpy().reshape(batch * frames, bands))
    return out


def norm_leaky_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, slope: float
                    ) -> torch.Tensor:
    """``leaky_relu(ChannelNorm(x), slope)`` of [B, C, T] float32 in one pass; weight, bias [C]."""
    x = x.contiguous()
    out = torch.empty(x.shape)
    _compiled()["norm_leaky"](_numpy(x), _numpy(weight), _numpy(bias), float(eps), float(slope), out.numpy())
    return out
