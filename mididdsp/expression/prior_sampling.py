"""The expression prior's note-by-note sampling loop, compiled (numba), for the torch module: no gradient, CPU.

:meth:`mididdsp.expression.prior.ExpressionPrior.sample` steps through the notes in Python: per note one GRU step
and, per output, an MLP head, a softmax and a quantile, about 200 small torch calls a note (1.5 ms). With
``compiled=True`` it hands its weights and tensors to the render's loop
(:func:`mididdsp.expression.prior_inference.sample_unit`): the autoregression-free parts computed for all notes at
once, the rest in one compiled loop in float64. The values equal the torch loop's to float rounding
(tests/test_expression_prior.py); the draws are the same uniforms, so the seed means the same.
"""
from __future__ import annotations

import torch

from mididdsp.dsp.kernels import available  # noqa: F401 - re-exported: whether numba imports


def sample_unit(prior, context: torch.Tensor, inputs: torch.Tensor, lengths: torch.Tensor, uniforms: torch.Tensor,
                fixed_mask: torch.Tensor, fixed_unit: torch.Tensor, temperature: float) -> torch.Tensor:
    """Every note's 7 outputs on their [0, 1] axes, [B, N, 7] float32 (0 after each row's ``lengths`` notes): the
    torch module's weights and tensors given to :func:`mididdsp.expression.prior_inference.sample_unit` (the
    render's, which says what they are)."""
    from mididdsp.expression import prior_inference

    state = {name: value.detach().numpy() for name, value in prior.state_dict().items()}
    return torch.from_numpy(prior_inference.sample_unit(
        state, prior.config, context.detach().numpy(), inputs.detach().numpy(), lengths.numpy(), uniforms.numpy(),
        fixed_mask.numpy(), fixed_unit.numpy(), temperature))
