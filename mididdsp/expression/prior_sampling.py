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
    """The autoregression-free parts of the loop and the weights it reads, as float64 numpy arrays (the torch
    module's weights given to :func:`mididdsp.expression.prior_inference.precompute`, which says what they are)."""
    from mididdsp.expression import prior_inference

    state = {name: value.detach().numpy() for name, value in prior.state_dict().items()}
    return prior_inference.precompute(state, prior.config, context.detach().numpy(), inputs.detach().numpy())


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
