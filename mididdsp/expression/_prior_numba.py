"""The compiled loop of :mod:`mididdsp.expression.prior_sampling` (imported on first use; this module imports
numba). At module level so that numba's on-disk cache serves every process (inside a function, the loop and the
helpers it calls as closure variables were compiled again in every process)."""
import math

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@numba.njit(nogil=True, cache=True)
def quantile(probs, u):
    """ExpressionPrior.inverse_cdf of one [bins] distribution (summing to 1) at u in [0, 1)."""
    bins = probs.shape[0]
    total = 0.0
    for b in range(bins):
        total += probs[b]
    target = u * total
    index = bins - 1
    below = total - probs[bins - 1]    # where no cumulative sum reaches the target (rounding): the last bin
    running = 0.0
    for b in range(bins):  # the first bin whose cumulative mass reaches the target (searchsorted, left)
        if running + probs[b] >= target:
            index = b
            below = running
            break
        running += probs[b]
    within = min(max((target - below) / max(probs[index], 1e-12), 0.0), 1.0)
    return (index + within) / bins


@numba.njit(nogil=True, fastmath=True, cache=True)
def sample_loop(gru_context, gru_previous, gru_hidden, gru_hidden_bias, head_base, head_ar, head_raw, head_bumps,
                head_out, head_out_bias, lengths, uniforms, fixed_mask, fixed_unit, temperature, point,
                n_bumps, out):
    """out [B, N, 7] on each output's [0, 1] axis; see the module docstring and ExpressionPrior.sample. fastmath:
    the dot products vectorise (the loop in half the time); their float64 sums reordered, the values agree with the
    torch loop's to float rounding as before (tests/test_expression_prior.py)."""
    batch = gru_context.shape[0]
    three_ar = gru_context.shape[2]
    ar = three_ar // 3
    n_heads, hidden_size = head_ar.shape[0], head_ar.shape[1]
    bins = head_out.shape[1]
    n_previous = gru_previous.shape[1]
    state = np.zeros(ar)
    gates_hidden = np.zeros(three_ar)
    gates_input = np.zeros(three_ar)
    previous = np.zeros(n_previous)
    unit = np.zeros(n_heads)
    hidden = np.zeros(hidden_size)
    logits = np.zeros(bins)
    probs = np.zeros(bins)
    centres = np.zeros(max(n_bumps, 1))
    encoded = np.zeros((n_heads, max(n_bumps, 1)))  # the bumps of this note's outputs so far
    for q in range(n_bumps):
        centres[q] = q / (n_bumps - 1) if n_bumps > 1 else 0.0
    for row in range(batch):
        state[:] = 0.0
        previous[:] = 0.0
        for i in range(lengths[row]):
            # the autoregressive GRU step: torch's gate order r, z, n
            for g in range(three_ar):
                value = float(gru_context[row, i, g])  # float32 products, widened exactly
                for p in range(n_previous):
                    value += gru_previous[g, p] * previous[p]
                gates_input[g] = value
                value = gru_hidden_bias[g]
                for a in range(ar):
                    value += gru_hidden[g, a] * state[a]
                gates_hidden[g] = value
            for a in range(ar):
                reset = sigmoid(gates_input[a] + gates_hidden[a])
                update = sigmoid(gates_input[ar + a] + gates_hidden[ar + a])
                candidate = math.tanh(gates_input[2 * ar + a] + reset * gates_hidden[2 * ar + a])
                state[a] = (1.0 - update) * candidate + update * state[a]
            for j in range(n_heads):
                for h in range(hidden_size):
                    value = float(head_base[row, i, j, h])
                    for a in range(ar):
                        value += head_ar[j, h, a] * state[a]
                    for m in range(j):  # the note's earlier outputs, raw and as Gaussian bumps
                        value += head_raw[j, h, m] * unit[m]
                        for q in range(n_bumps):
                            value += head_bumps[j, h, m, q] * encoded[m, q]
                    hidden[h] = value if value >= 0.0 else 0.01 * value  # LeakyReLU
                top = -1e300
                for b in range(bins):
                    value = head_out_bias[j, b]
                    for h in range(hidden_size):
                        value += head_out[j, b, h] * hidden[h]
                    logits[b] = value / temperature if temperature > 0.0 else value
                    top = max(top, logits[b])
                total = 0.0
                for b in range(bins):
                    probs[b] = math.exp(logits[b] - top)
                    total += probs[b]
                for b in range(bins):  # the softmax
                    probs[b] /= total
                if temperature > 0.0:
                    drawn = quantile(probs, uniforms[row, i, j])
                elif point == 0:  # mean
                    drawn = 0.0
                    for b in range(bins):
                        drawn += probs[b] * (b + 0.5) / bins
                elif point == 1:  # median
                    drawn = quantile(probs, 0.5)
                else:  # mode
                    best = 0
                    for b in range(bins):
                        if probs[b] > probs[best]:
                            best = b
                    drawn = (best + 0.5) / bins
                unit[j] = fixed_unit[row, i, j] if fixed_mask[row, i, j] else drawn
                for q in range(n_bumps):  # its bumps, once for every later head (encode_values)
                    spread = (unit[j] - centres[q]) * (n_bumps - 1)
                    encoded[j, q] = math.exp(-0.5 * spread * spread)
                out[row, i, j] = unit[j]
            for p in range(n_previous - 1):  # the next note's autoregression input; this note is known
                previous[p] = unit[p]
            previous[n_previous - 1] = 1.0
    return out


@numba.njit(nogil=True, cache=True)
def gru_sequence(gates_input, weight_hidden, bias_hidden, lengths, reverse, out):
    """One direction of a one-layer GRU over each row's first ``lengths[b]`` steps, as torch's ``nn.GRU`` on a
    packed sequence (the backward direction starts at the row's own last step): ``gates_input`` [B, N, 3H] float32
    (the input weights applied, with their bias; rows r, z, n as in torch), ``weight_hidden`` [3H, H],
    ``bias_hidden`` [3H] -> ``out`` [B, N, H] float32 (steps past a row's length untouched). float32, as torch's."""
    batch, steps, gates = gates_input.shape
    size = gates // 3
    hidden = np.zeros(size, np.float32)
    recurrent = np.zeros(gates, np.float32)
    for b in range(batch):
        hidden[:] = 0.0
        for step in range(lengths[b]):
            i = lengths[b] - 1 - step if reverse else step
            for g in range(gates):
                total = bias_hidden[g]
                for h in range(size):
                    total += weight_hidden[g, h] * hidden[h]
                recurrent[g] = total
            for h in range(size):
                reset = np.float32(1.0) / (np.float32(1.0) + np.exp(-(gates_input[b, i, h] + recurrent[h])))
                update = np.float32(1.0) / (np.float32(1.0) + np.exp(-(gates_input[b, i, size + h]
                                                                        + recurrent[size + h])))
                candidate = np.tanh(gates_input[b, i, 2 * size + h] + reset * recurrent[2 * size + h])
                hidden[h] = (np.float32(1.0) - update) * candidate + update * hidden[h]
            for h in range(size):
                out[b, i, h] = hidden[h]
