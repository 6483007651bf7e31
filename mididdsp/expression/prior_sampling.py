"""The expression prior's note-by-note sampling loop, compiled (numba): no gradient, CPU.

:meth:`mididdsp.expression.prior.ExpressionPrior.sample` steps through the notes in Python: per note one GRU step
and, per output, an MLP head, a softmax and a quantile, about 200 small torch calls a note (1.5 ms). Most of the
work does not depend on the autoregression: the GRU's input weights applied to the bidirectional context, and
every head's first layer applied to the context and the note's features, are computed here for all notes at once
(:func:`precompute`). What is left per note and output, the GRU step on the previous note's values, the heads'
part that reads the autoregressive state and the note's earlier outputs, the second layers and the quantile, runs
in one compiled loop in float64 (``sample_loop``). The values equal the torch loop's to float rounding
(tests/test_expression_prior.py); the draws are the same uniforms, so the seed means the same.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from mididdsp.dsp.kernels import available  # noqa: F401 - re-exported: whether numba imports

POINTS = {"mean": 0, "median": 1, "mode": 2}




def precompute(prior, context: torch.Tensor, inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """The autoregression-free parts of the loop and the weights it reads, as float64 numpy arrays.

    Args:
        prior: an :class:`~mididdsp.expression.prior.ExpressionPrior`.
        context: [B, N, C] bidirectional note context (C = 2 * hidden_size).
        inputs: [B, N, I] per-note features and instrument embedding.
    Returns:
        ``gru_context`` [B, N, 3A] (the GRU's input weights on the context, plus both GRU biases' input part),
        ``gru_previous`` [3A, 7], ``gru_hidden`` [3A, A], ``gru_hidden_bias`` [3A] (A = ar_size; rows r, z, n as
        in torch), ``head_base`` [B, N, 7, H] (each head's first layer on context and features, with its bias;
        H = head_size), ``head_ar`` [7, H, A], ``head_raw`` [7, H, 6] and ``head_bumps`` [7, H, 6, V] (first-layer
        columns of the earlier outputs: raw value and bumps, zero for outputs at or after the head's own),
        ``head_out`` [7, bins, H], ``head_out_bias`` [7, bins].
    """
    gru = prior.ar_gru
    c = context.shape[-1]
    w_ih, w_hh = gru.weight_ih_l0.detach(), gru.weight_hh_l0.detach()
    b_ih, b_hh = gru.bias_ih_l0.detach(), gru.bias_hh_l0.detach()
    gru_context = torch.nn.functional.linear(context, w_ih[:, :c], b_ih)
    ar = prior.config.ar_size
    bumps = prior.config.value_bumps
    heads = prior.heads
    n_heads, hidden = len(heads), prior.config.head_size
    state_size = c + ar + inputs.shape[-1]
    head_base, head_ar = [], []
    head_raw = np.zeros((n_heads, hidden, 6))
    head_bumps = np.zeros((n_heads, hidden, 6, max(bumps, 1)))
    for j, head in enumerate(heads):
        weight, bias = head[0].weight.detach(), head[0].bias.detach()
        head_base.append(torch.nn.functional.linear(context, weight[:, :c], bias)
                         + torch.nn.functional.linear(inputs, weight[:, c + ar:state_size]))
        head_ar.append(weight[:, c:c + ar])
        earlier = weight[:, state_size:].double().numpy()   # encode_values layout: j raw values, then j x bumps
        head_raw[j, :, :j] = earlier[:, :j]
        if bumps:
            head_bumps[j, :, :j] = earlier[:, j:].reshape(hidden, j, bumps)
    return {
        "gru_context": gru_context.double().numpy(),
        "gru_previous": w_ih[:, c:].double().numpy(),
        "gru_hidden": w_hh.double().numpy(),
        "gru_hidden_bias": b_hh.double().numpy(),
        "head_base": torch.stack(head_base, dim=2).double().numpy(),
        "head_ar": torch.stack(head_ar).double().numpy(),
        "head_raw": head_raw,
        "head_bumps": head_bumps,
        "head_out": torch.stack([head[2].weight.detach() for head in heads]).double().numpy(),
        "head_out_bias": torch.stack([head[2].bias.detach() for head in heads]).double().numpy(),
    }


@functools.lru_cache(maxsize=1)
def _compiled():
    from mididdsp.expression import _prior_numba

    return _prior_numba.sample_loop


def sample_unit(prior, context: torch.Tensor, inputs: torch.Tensor, lengths: torch.Tensor, uniforms: torch.Tensor,
                fixed_mask: torch.Tensor, fixed_unit: torch.Tensor, temperature: float) -> torch.Tensor:
    """Every note's 7 outputs on their [0, 1] axes, [B, N, 7] float32 (0 after each row's ``lengths`` notes).

    Args:
        context: [B, N, C]; inputs: [B, N, I] (see :func:`precompute`); lengths: [B] valid notes per row (valid
            notes first); uniforms: [B, N, 7] in [0, 1); fixed_mask: [B, N, 7] bool; fixed_unit: [B, N, 7] the
            fixed values on the [0, 1] axes; temperature: >= 0 (0: each output's point estimate).
    """
    arrays = precompute(prior, context, inputs)
    out = np.zeros(tuple(uniforms.shape))
    _compiled()(arrays["gru_context"], arrays["gru_previous"], arrays["gru_hidden"], arrays["gru_hidden_bias"],
                arrays["head_base"], arrays["head_ar"], arrays["head_raw"], arrays["head_bumps"], arrays["head_out"],
                arrays["head_out_bias"], lengths.long().numpy(), uniforms.double().numpy(),
                fixed_mask.bool().numpy(), fixed_unit.double().numpy(), float(temperature),
                POINTS[prior.config.point_estimate], int(prior.config.value_bumps), out)
    return torch.from_numpy(out.astype(np.float32))
