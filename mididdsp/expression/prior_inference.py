"""The expression prior's sampling without torch: numpy and the compiled loops of
:mod:`mididdsp.expression._prior_numba`. What a render runs, so that it never imports torch.

:class:`PriorInference` holds a trained :class:`~mididdsp.expression.prior.ExpressionPrior`'s weights as arrays and
samples as its ``sample(..., compiled=True)`` does, equal to it to float rounding (tests/test_inference.py): the
note features, the input MLP and the bidirectional GRU give each note's context (float32, as torch's), the parts of
the note loop that do not depend on the autoregression are computed for all notes at once (:func:`precompute`),
and the note loop itself is compiled (float64). The uniforms are torch's for the same seed (:mod:`mididdsp.seeds`),
so a seed means the same table with and without torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mididdsp.expression.prior_settings import (GAP_CLIP_S, N_CONTROLS, N_FEATURES, PHRASE_NOTES_SCALE,
                                                PRIOR_OUTPUTS, RATE_INDEX, PriorConfig)
from mididdsp.native import PRIOR, kernel
from mididdsp.seeds import torch_uniform

POINTS = {"mean": 0, "median": 1, "mode": 2}
LAYER_NORM_EPS = 1e-5   # nn.LayerNorm's
MLP_SLOPE = 0.01        # nn.LeakyReLU's default, the input MLP's


def note_features(notes: np.ndarray, mask: np.ndarray, rest_seconds: float) -> np.ndarray:
    """:func:`mididdsp.expression.prior.note_features` in numpy: [B, N, 4] notes and [B, N] bool mask (valid notes
    first) -> [B, N, 13] float32, 0 on padding."""
    batch, count = mask.shape
    start, end, pitch, velocity = (notes[..., k].astype(np.float32) for k in range(4))
    has_prev = np.zeros_like(mask)
    has_prev[:, 1:] = mask[:, 1:] & mask[:, :-1]
    has_next = np.zeros_like(mask)
    has_next[:, :-1] = mask[:, :-1] & mask[:, 1:]
    low, high = (np.float32(v) for v in GAP_CLIP_S)
    gap_prev = np.zeros_like(start)
    gap_prev[:, 1:] = start[:, 1:] - end[:, :-1]
    gap_prev = np.where(has_prev, np.clip(gap_prev, low, high), high)
    gap_next = np.zeros_like(start)
    gap_next[:, :-1] = start[:, 1:] - end[:, :-1]
    gap_next = np.where(has_next, np.clip(gap_next, low, high), high)
    interval_prev = np.zeros_like(pitch)
    interval_prev[:, 1:] = pitch[:, 1:] - pitch[:, :-1]
    interval_prev = np.where(has_prev, np.clip(interval_prev / np.float32(12.0), -2.0, 2.0), np.float32(0))
    interval_next = np.zeros_like(pitch)
    interval_next[:, :-1] = pitch[:, 1:] - pitch[:, :-1]
    interval_next = np.where(has_next, np.clip(interval_next / np.float32(12.0), -2.0, 2.0), np.float32(0))
    rest_before = gap_prev > rest_seconds
    rest_after = gap_next > rest_seconds
    index = np.broadcast_to(np.arange(count), (batch, count))
    first = np.maximum.accumulate(np.where(rest_before, index, 0), axis=1)
    since = (index - first).astype(np.float32)
    last = np.minimum.accumulate(np.where(rest_after, index, count)[:, ::-1], axis=1)[:, ::-1]
    until = (last - index).astype(np.float32)
    fraction = since / np.maximum(since + until, np.float32(1.0))
    duration = np.maximum(end - start, np.float32(0.02))
    features = np.stack([
        (pitch - np.float32(64.0)) / np.float32(24.0), np.log(duration), gap_prev, gap_next,
        velocity / np.float32(127.0), np.log(np.maximum(velocity, np.float32(1.0)) / np.float32(127.0)),
        np.minimum(since / np.float32(PHRASE_NOTES_SCALE), np.float32(2.0)),
        np.minimum(until / np.float32(PHRASE_NOTES_SCALE), np.float32(2.0)), fraction,
        interval_prev, interval_next, rest_before.astype(np.float32), rest_after.astype(np.float32)], axis=-1)
    return (features * mask[..., None]).astype(np.float32)


def precompute(state: dict[str, np.ndarray], config: PriorConfig, context: np.ndarray, inputs: np.ndarray
               ) -> dict[str, np.ndarray]:
    """The autoregression-free parts of the note loop and the weights it reads (the loop's arguments): float64,
    but for the two products of the context, float32 as computed.

    Args:
        state: the prior's state dict as arrays; config: its settings.
        context: [B, N, C] bidirectional note context (C = 2 * hidden_size).
        inputs: [B, N, I] per-note features and instrument embedding.
    Returns:
        ``gru_context`` [B, N, 3A] float32 (the GRU's input weights on the context, with its input bias), ``gru_previous``
        [3A, 7], ``gru_hidden`` [3A, A], ``gru_hidden_bias`` [3A] (A = ar_size; rows r, z, n as in torch),
        ``head_base`` [B, N, 7, H] float32 (each head's first layer on context and features, with its bias; H = head_size),
        ``head_ar`` [7, H, A], ``head_raw`` [7, H, 6] and ``head_bumps`` [7, H, 6, V] (first-layer columns of the
        earlier outputs: raw value and bumps, zero for outputs at or after the head's own), ``head_out``
        [7, bins, H], ``head_out_bias`` [7, bins].
    """
    c = context.shape[-1]
    ar, bumps, hidden = config.ar_size, config.value_bumps, config.head_size
    w_ih = state["ar_gru.weight_ih_l0"]
    n_heads = len(PRIOR_OUTPUTS)
    state_size = c + ar + inputs.shape[-1]
    # head_base stays float32, as BLAS computes it (the loop widens each element it reads: the same values as a
    # float64 copy). A float64 copy of [B, N, 7, H] was 84 MB for test04.mid's 39 voices, and making it a third of
    # the prior's time.
    head_base = np.empty(context.shape[:2] + (n_heads, hidden), np.float32)
    head_ar = []
    head_raw = np.zeros((n_heads, hidden, 6))
    head_bumps = np.zeros((n_heads, hidden, 6, max(bumps, 1)))
    for j in range(n_heads):
        weight, bias = state[f"heads.{j}.0.weight"], state[f"heads.{j}.0.bias"]
        base = context @ weight[:, :c].T  # the sums in the order of the expression they replace: (a + b) + c
        base += bias
        base += inputs @ weight[:, c + ar:state_size].T
        head_base[:, :, j] = base
        head_ar.append(weight[:, c:c + ar])
        earlier = weight[:, state_size:].astype(np.float64)  # encode_values layout: j raw values, then j x bumps
        head_raw[j, :, :j] = earlier[:, :j]
        if bumps:
            head_bumps[j, :, :j] = earlier[:, j:].reshape(hidden, j, bumps)
    as64 = lambda values: np.ascontiguousarray(values, np.float64)  # noqa: E731
    gru_context = context @ w_ih[:, :c].T
    gru_context += state["ar_gru.bias_ih_l0"]
    return {
        "gru_context": gru_context,
        "gru_previous": as64(w_ih[:, c:]),
        "gru_hidden": as64(state["ar_gru.weight_hh_l0"]),
        "gru_hidden_bias": as64(state["ar_gru.bias_hh_l0"]),
        "head_base": head_base,
        "head_ar": as64(np.stack(head_ar)),
        "head_raw": head_raw,
        "head_bumps": head_bumps,
        "head_out": as64(np.stack([state[f"heads.{j}.2.weight"] for j in range(n_heads)])),
        "head_out_bias": as64(np.stack([state[f"heads.{j}.2.bias"] for j in range(n_heads)])),
    }


def sample_unit(state: dict[str, np.ndarray], config: PriorConfig, context: np.ndarray, inputs: np.ndarray,
                lengths: np.ndarray, uniforms: np.ndarray, fixed_mask: np.ndarray, fixed_unit: np.ndarray,
                temperature: float) -> np.ndarray:
    """Every note's 7 outputs on their [0, 1] axes, [B, N, 7] float32 (0 after each row's ``lengths`` notes): the
    compiled note loop over :func:`precompute`'s arrays.

    Args:
        state, config: the prior's; context: [B, N, C]; inputs: [B, N, I] (see :func:`precompute`); lengths: [B]
            valid notes per row (valid notes first); uniforms: [B, N, 7] in [0, 1); fixed_mask: [B, N, 7] bool;
            fixed_unit: [B, N, 7] the fixed values on the [0, 1] axes; temperature: >= 0 (0: each output's point
            estimate).
    """
    arrays = precompute(state, config, context, inputs)
    out = np.zeros(np.shape(uniforms))
    kernel(PRIOR, "sample_loop")(
        arrays["gru_context"], arrays["gru_previous"], arrays["gru_hidden"], arrays["gru_hidden_bias"],
        arrays["head_base"], arrays["head_ar"], arrays["head_raw"], arrays["head_bumps"], arrays["head_out"],
        arrays["head_out_bias"], np.asarray(lengths, np.int64), np.asarray(uniforms, np.float64),
        np.asarray(fixed_mask, bool), np.asarray(fixed_unit, np.float64), float(temperature),
        POINTS[config.point_estimate], int(config.value_bumps), out)
    return out.astype(np.float32)


class PriorInference:
    """An expression prior's weights (``state``, its state dict as numpy arrays) and config, for sampling.
    ``metadata``: the model directory's whole config (instruments, the velocity-level fit, ...)."""

    def __init__(self, config: PriorConfig | dict, state: dict[str, np.ndarray], metadata: dict | None = None):
        self.config = PriorConfig.from_dict(config) if isinstance(config, dict) else config
        self.metadata = metadata or {}
        self.state = {name: np.ascontiguousarray(value, np.float32) for name, value in state.items()}

    @classmethod
    def load(cls, directory: str | Path) -> "PriorInference":
        """A prior model directory (``config.yaml`` + ``weights.pt``) -> PriorInference; ModelError naming the file
        when it is missing, broken or does not fit its config."""
        from mididdsp.models import load_arrays

        config, metadata, state = load_arrays(directory, ("ExpressionPrior",), PriorConfig, cls.expected_shapes)
        return cls(config, state, metadata)

    @staticmethod
    def expected_shapes(config: PriorConfig) -> dict[str, tuple]:
        """The state dict's names and shapes a prior of ``config`` has (as the torch module's)."""
        hidden, embedding = config.hidden_size, config.instrument_embedding
        input_size = N_FEATURES + embedding
        shapes: dict[str, tuple] = {}
        if embedding > 0:
            shapes["instrument_embedding.weight"] = (config.n_instruments, embedding)
        shapes.update({"input_mlp.0.weight": (hidden, input_size), "input_mlp.0.bias": (hidden,),
                       "input_mlp.1.weight": (hidden,), "input_mlp.1.bias": (hidden,),
                       "input_mlp.3.weight": (hidden, hidden), "input_mlp.3.bias": (hidden,)})
        for suffix in ("", "_reverse"):
            shapes.update({f"context_gru.weight_ih_l0{suffix}": (3 * hidden, hidden),
                           f"context_gru.weight_hh_l0{suffix}": (3 * hidden, hidden),
                           f"context_gru.bias_ih_l0{suffix}": (3 * hidden,),
                           f"context_gru.bias_hh_l0{suffix}": (3 * hidden,)})
        ar_input = 2 * hidden + N_CONTROLS + 1
        shapes.update({"ar_gru.weight_ih_l0": (3 * config.ar_size, ar_input),
                       "ar_gru.weight_hh_l0": (3 * config.ar_size, config.ar_size),
                       "ar_gru.bias_ih_l0": (3 * config.ar_size,), "ar_gru.bias_hh_l0": (3 * config.ar_size,)})
        state_size = 2 * hidden + config.ar_size + input_size
        for j in range(len(PRIOR_OUTPUTS)):
            shapes.update({f"heads.{j}.0.weight": (config.head_size, state_size + j * (1 + config.value_bumps)),
                           f"heads.{j}.0.bias": (config.head_size,),
                           f"heads.{j}.2.weight": (config.n_bins, config.head_size),
                           f"heads.{j}.2.bias": (config.n_bins,)})
        return shapes

    # ------------------------------------------------------------------------------------------------ pieces
    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """[..., 7] values -> each output's [0, 1] bin axis (the rate mapped from its Hz range), clipped."""
        low, high = np.float32(self.config.rate_low_hz), np.float32(self.config.rate_high_hz)
        rate = (values[..., RATE_INDEX:] - low) / (high - low)
        return np.clip(np.concatenate([values[..., :N_CONTROLS], rate], axis=-1), 0.0, 1.0).astype(np.float32)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_unit` inside the ranges."""
        low, high = np.float32(self.config.rate_low_hz), np.float32(self.config.rate_high_hz)
        return np.concatenate([unit[..., :N_CONTROLS], low + unit[..., RATE_INDEX:] * (high - low)], axis=-1)

    def context(self, notes: np.ndarray, mask: np.ndarray, instrument: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bidirectional note context [B, N, 2 * hidden_size] and the per-note inputs [B, N, input_size] (the
        module's ``context`` without dropout), float32, 0 on padding."""
        state, config = self.state, self.config
        batch, count = mask.shape
        maskf = mask[..., None].astype(np.float32)
        inputs = [note_features(notes, mask, config.rest_seconds)]
        if config.instrument_embedding > 0:
            embedded = state["instrument_embedding.weight"][np.asarray(instrument, np.int64)]
            inputs.append(np.broadcast_to(embedded[:, None], (batch, count, embedded.shape[-1])))
        inputs = np.concatenate(inputs, axis=-1) * maskf
        hidden = inputs @ state["input_mlp.0.weight"].T + state["input_mlp.0.bias"]
        mean = hidden.mean(-1, keepdims=True)
        variance = ((hidden - mean) ** 2).mean(-1, keepdims=True)
        hidden = (hidden - mean) / np.sqrt(variance + np.float32(LAYER_NORM_EPS))
        hidden = hidden * state["input_mlp.1.weight"] + state["input_mlp.1.bias"]
        hidden = np.where(hidden >= 0, hidden, hidden * np.float32(MLP_SLOPE))
        hidden = hidden @ state["input_mlp.3.weight"].T + state["input_mlp.3.bias"]
        hidden = np.where(hidden >= 0, hidden, hidden * np.float32(MLP_SLOPE)).astype(np.float32)
        lengths = np.maximum(mask.sum(axis=1), 1).astype(np.int64)
        size = config.hidden_size
        context = np.zeros((batch, count, 2 * size), np.float32)
        gru = kernel(PRIOR, "gru_sequence")
        for direction, suffix in enumerate(("", "_reverse")):
            gates = np.ascontiguousarray(hidden @ state[f"context_gru.weight_ih_l0{suffix}"].T
                                         + state[f"context_gru.bias_ih_l0{suffix}"], np.float32)
            out = np.zeros((batch, count, size), np.float32)
            gru(gates, state[f"context_gru.weight_hh_l0{suffix}"], state[f"context_gru.bias_hh_l0{suffix}"],
                lengths, bool(direction), out)
            context[..., direction * size:(direction + 1) * size] = out
        return context * maskf, inputs.astype(np.float32)

    def sample(self, notes: np.ndarray, mask: np.ndarray, instrument: np.ndarray, temperature: float = 1.0,
               seed: int | None = 0, fixed_values: np.ndarray | None = None, fixed_mask: np.ndarray | None = None
               ) -> np.ndarray:
        """Expression for every note, [B, N, 7] float32 (:data:`PRIOR_OUTPUTS`; 0 on padding): the module's
        ``sample`` (shapes, ``temperature``, ``seed`` and the fixed values as there)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        notes = np.asarray(notes, np.float32)
        mask = np.asarray(mask, bool)
        batch, count = mask.shape
        outputs = len(PRIOR_OUTPUTS)
        uniforms = torch_uniform(seed, (batch, count, outputs))
        if (fixed_mask is None) != (fixed_values is None):
            raise ValueError("fixed_values and fixed_mask go together: give both or neither")
        if fixed_mask is None or fixed_values is None:
            fixed_mask = np.zeros((batch, count, outputs), bool)
            fixed_values = np.zeros((batch, count, outputs), np.float32)
        fixed_mask = np.asarray(fixed_mask, bool) & mask[..., None]
        fixed_values = np.asarray(fixed_values, np.float32)
        fixed_unit = self.to_unit(fixed_values)
        context, inputs = self.context(notes, mask, instrument)
        unit = sample_unit(self.state, self.config, context, inputs, mask.sum(axis=1), uniforms, fixed_mask,
                           fixed_unit, temperature)
        values = np.where(fixed_mask, fixed_values, self.from_unit(unit))
        return (values * mask[..., None]).astype(np.float32)
