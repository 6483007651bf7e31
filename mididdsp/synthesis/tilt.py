"""The harmonic distribution's centroid tilt: ``softmax(logits + beta k)`` with ``beta`` per frame such that the
distribution's centroid ``sum_k k h_k`` is the one asked for (the brightness control, by construction), and the
logits' tilt that this solve undoes. The tensor code here trains (a last Newton step carries the implicit
gradients); without gradient on the CPU, :func:`tilt_to_centroid` hands over to the compiled per-frame solve of
:mod:`mididdsp.synthesis.kernels`, equal to float rounding.
"""
from __future__ import annotations

import torch

TILT_TOLERANCE = 1e-4         # harmonic numbers: the centroid solve stops when every frame is this close


def tilt_to_centroid(logits: torch.Tensor, centroid: torch.Tensor, iterations: int = 24) -> torch.Tensor:
    """softmax(logits + beta k) with beta per frame such that sum_k k h_k equals ``centroid``.

    Args:
        logits: [..., K] (masked harmonics at -1e4); centroid: [...] target in harmonic numbers, reachable
            (1 .. the highest unmasked harmonic).
    Returns:
        [..., K] distributions summing to 1. The centroid is increasing in beta (its derivative is the variance
        of k), so Newton steps (at most 3 per iteration) inside a shrinking bracket converge in a few iterations; beta is
        found without gradient, then a last Newton step carries the implicit derivatives (to logits and target).
        Without gradient, on the CPU, a compiled per-frame solve gives the same distributions to float rounding
        (:mod:`mididdsp.synthesis.kernels`).
    """
    if (not torch.is_grad_enabled() or not (logits.requires_grad or centroid.requires_grad)) \
            and logits.device.type == "cpu" and logits.dtype == torch.float32 and iterations == 24:
        from mididdsp.synthesis import kernels as tilt

        if tilt.available():
            return torch.from_numpy(tilt.tilt_to_centroid_inference(logits.detach(), centroid.detach()))
    k = torch.arange(1, logits.shape[-1] + 1, dtype=logits.dtype, device=logits.device)
    with torch.no_grad():
        beta = _solve_tilt(logits.detach().reshape(-1, logits.shape[-1]), centroid.detach().reshape(-1), k,
                           iterations).reshape(centroid.shape)
    # One more Newton step, with gradient: its value is beta (to the solver's precision) and its derivatives are
    # those of the implicit solution (d beta = -(d centroid at fixed beta) / variance), so the centroid target
    # gets gradients and the logits get none along the direction the tilt undoes.
    h = torch.softmax(logits + beta.unsqueeze(-1) * k, dim=-1)
    mean = (h * k).sum(-1)
    variance = (h * (k - mean.unsqueeze(-1)) ** 2).sum(-1)
    beta = beta + (centroid - mean) / variance.clamp_min(1e-6)
    return torch.softmax(logits + beta.unsqueeze(-1) * k, dim=-1)


def _solve_tilt(logits: torch.Tensor, centroid: torch.Tensor, k: torch.Tensor, iterations: int,
                fixed_shapes: bool | None = None) -> torch.Tensor:
    """beta [F] for [F, K] ``logits`` and [F] ``centroid`` (see :func:`tilt_to_centroid`), no gradient.

    Every 4 iterations the frames within :data:`TILT_TOLERANCE` keep their beta and stop. On the CPU they leave
    the set still solved, so the outliers' extra iterations cost only their own frames (most frames converge in
    4-8); with ``fixed_shapes`` (default: on accelerators) every frame stays in the set and a converged one is
    frozen by a mask instead, the same result without reading the convergence back to the host (a sync that
    stalls a GPU every 4 iterations). Either way a frame's beta does not depend on which other frames share the
    call."""
    if fixed_shapes is None:
        fixed_shapes = logits.device.type != "cpu"
    beta = torch.zeros_like(centroid)
    index = torch.arange(centroid.shape[0], device=centroid.device)  # frames still being solved
    solved_logits, target, current = logits, centroid, beta
    low, high = torch.full_like(centroid, -30.0), torch.full_like(centroid, 30.0)
    done = torch.zeros_like(centroid, dtype=torch.bool)
    for iteration in range(iterations):
        h = torch.softmax(solved_logits + current.unsqueeze(-1) * k, dim=-1)
        mean = h @ k
        if iteration % 4 == 3:
            open_ = (mean - target).abs() >= TILT_TOLERANCE
            if fixed_shapes:
                done = done | ~open_
            else:
                beta[index] = current
                if not bool(open_.any()):
                    return beta
                keep = open_.nonzero().squeeze(-1)
                if keep.shape[0] < index.shape[0]:
                    index, solved_logits, target, current = (index[keep], solved_logits[keep], target[keep],
                                                             current[keep])
                    low, high, h, mean = low[keep], high[keep], h[keep], mean[keep]
        variance = h @ (k * k) - mean * mean
        above = mean > target
        high = torch.where(above, current, high)
        low = torch.where(above, low, current)
        step = current - ((mean - target) / variance.clamp_min(1e-6)).clamp(-3.0, 3.0)  # trust region
        inside = (step > low) & (step < high)
        updated = torch.where(inside, step, 0.5 * (low + high))
        current = torch.where(done, current, updated) if fixed_shapes else updated
    if fixed_shapes:
        return current
    beta[index] = current
    return beta


def without_tilt(logits: torch.Tensor) -> torch.Tensor:
    """[..., K] logits minus their least-squares line in k. The tilt that follows sets the slope anyway; left in,
    it is a direction the loss cannot see (the solved tilt undoes any change along it), along which the logits
    drifted until softmax saturated and training diverged (harmonic KL 0.11 -> 2.0, gradient norm 6 -> 250)."""
    k = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    k = (k - k.mean()) / (k - k.mean()).norm()
    centred = logits - logits.mean(-1, keepdim=True)
    return centred - (centred * k).sum(-1, keepdim=True) * k
