"""The synthesis generator's per-frame stages compiled for inference (numba): no gradient, CPU.

Training runs the tensor code in :mod:`mididdsp.synthesis.generator`, which these equal to float rounding
(tests/test_synthesis_generator.py). In a render the generator's cost is per frame, and outside its convolutions
most of it was elementwise passes over [T, 60] and [T, 65] tensors and the centroid solve:

* the centroid tilt. :func:`~mididdsp.synthesis.tilt.tilt_to_centroid` finds, per frame, the ``beta`` for
  which ``h = softmax(logits + beta k)`` has the centroid asked for, with batched torch Newton steps (a softmax
  over all harmonics of every open frame per step, convergence checked every 4 steps). Here each frame is solved
  on its own in float64 (one exp per harmonic, then the tilt ``exp(beta)^k`` by products): Newton steps inside a
  shrinking bracket, started from the previous frame's ``beta`` (neighbouring frames differ little, so most frames
  take 2-3 steps), until the step is below float32 resolution. The result is the exact solution rounded to
  float32; the torch solve approaches it to :data:`~mididdsp.synthesis.tilt.TILT_TOLERANCE` and then takes a
  last Newton step, so the two agree to float rounding, whatever the start.
* and, in torch but in place (their tanh and exp are vectorised there, 4x faster than libm's per element), the
  harmonic logits before the tilt and the noise bands' magnitudes.

numba is imported on first use; :func:`available` says whether it can be.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from mididdsp.dsp.kernels import available  # noqa: F401 - re-exported: whether numba imports

BRACKET = 30.0        # |beta| bound, as in the torch solve
MAX_STEPS = 60        # Newton or bisection steps per frame (bisection alone would need about 40 to reach 1e-10)
STEP_TOLERANCE = 1e-10  # |beta change| at which a frame is solved (far below what float32 output resolves)
POWER_LIMIT = 600.0   # |beta| * K below which exp(beta)^k is formed by products (exp(600) fits float64's range)
EXP_FLOOR = -80.0     # logits this far under the frame's largest give weight 0 (exp(-80) = 1.8e-35: float32 normal)




@functools.lru_cache(maxsize=1)
def _compiled() -> dict:
    from mididdsp.synthesis import _tilt_numba

    return {"tilt": _tilt_numba.tilt, "tilt_scaled": _tilt_numba.tilt_scaled}


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


def harmonic_distribution(raw: torch.Tensor, nyquist_ok: torch.Tensor, centroid: torch.Tensor, squash: float
                          ) -> torch.Tensor:
    """The generator's harmonic distribution from its raw harmonic outputs: logits ``squash * tanh(raw / squash)``
    less their least-squares line in k (:func:`~mididdsp.synthesis.tilt.without_tilt`), harmonics not
    ``nyquist_ok`` masked, tilted to ``centroid``. The elementwise part stays in torch (its tanh and exp are
    vectorised), in place.

    Args:
        raw: [B, T, K] network outputs (any strides); nyquist_ok: [B, T, K] bool; centroid: [B, T] reachable target
            (harmonic numbers, 1 .. the highest harmonic that is ``nyquist_ok``).
    Returns:
        [B, T, K] float32 distributions.
    """
    from mididdsp.synthesis.tilt import without_tilt

    logits = without_tilt(torch.tanh(raw / squash).mul_(squash)).masked_fill_(~nyquist_ok, -1e4)
    relative = logits.sub_(logits.amax(-1, keepdim=True))
    # exp of the masked -1e4 underflows on a slow path (8x the time of the whole [T, K] exp): such entries, and
    # any below EXP_FLOOR (weights under 2e-35 of the largest), are set to 0 instead, which is what they round to
    negligible = relative < EXP_FLOOR
    scaled = relative.clamp_min_(EXP_FLOOR).exp_().masked_fill_(negligible, 0.0).reshape(-1, raw.shape[-1])
    out = torch.empty(raw.shape)  # torch's allocation (aligned as oneDNN wants it), written through numpy
    _compiled()["tilt_scaled"](_numpy(scaled), _numpy(centroid.reshape(-1)), out.numpy().reshape(scaled.shape))
    return out


def noise_magnitudes(raw: torch.Tensor, level_db: torch.Tensor, spread: torch.Tensor, silent: torch.Tensor,
                     shape_db: float, silence_db: float) -> torch.Tensor:
    """Linear noise-band magnitudes [B, T, M] from the raw band outputs [B, T, M], the noise level [B, T] (dB),
    the bands' spread [B, T] (0..1) and the silent frames [B, T] bool (at ``silence_db``): the generator's
    ``10 ** ((level + band - mean(band)) / 20)``, band = shape_db * spread * tanh(raw / 3), in place (torch's
    pow(10, .) is 3x slower than exp)."""
    band = torch.tanh(raw / 3.0).mul_((shape_db * spread).unsqueeze(-1))
    band = band.add_((level_db - band.mean(-1)).unsqueeze(-1)).masked_fill_(silent.unsqueeze(-1), silence_db)
    return band.mul_(math.log(10.0) / 20.0).exp_()
