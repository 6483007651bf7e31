"""The vibrato extent of :func:`mididdsp.expression.vibrato.vibrato`, in numpy, for one voice: what ``mididdsp
render`` reads from a MIDI file's pitch bend (:func:`mididdsp.controllers.bend_vibrato_extent`) without importing
torch, whose import alone costs about a second per process.

The same measure step for step, in float64 as there (see that module's docstring for the method and its reasons):
note blocks, frame selection, least-squares periodogram over the candidate rates, parabolic refinement, whole-note
and one-period-window amplitudes, gate. It agrees with the torch measure to rounding (within 2e-9 cents on random
bends; ``tests/test_vibrato_numpy.py``). The constants are shared through :mod:`mididdsp.expression.vibrato_settings`.
"""
from __future__ import annotations

import math

import numpy as np

from mididdsp.dsp.constants import FRAME_RATE
from mididdsp.expression.vibrato_settings import (
    VIBRATO_CHUNK_ELEMENTS, VIBRATO_EXTENT_QUANTILE, VIBRATO_GATE_RAMPS, VIBRATO_MIN_NOTE_S, VIBRATO_OUTLIER_CENTS,
    VIBRATO_RATE_RANGE_HZ, VIBRATO_SEARCH_HZ, VIBRATO_SETTLE_FRAMES, VIBRATO_SKIP_FRAMES, VIBRATO_TRANSITION_FRAMES)


def note_vibrato_extent(deviation_cents: np.ndarray, note_index: np.ndarray, count: int,
                        frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Gated vibrato extent (cents) of every note of one voice, [count] float64.

    Args:
        deviation_cents: [T] pitch deviation in cents (a bend, or an f0 less the note's pitch) at ``frame_rate``.
        note_index: [T] int, the note (0 .. count - 1) each frame belongs to, or -1 (any value outside: a rest).
        count: number of notes; a note without frames gets 0. frame_rate: frames per second (Hz).
    Equals ``vibrato(deviation[None], NoteFrames(note_index[None], count))[0]`` of the torch module.
    """
    deviation = np.asarray(deviation_cents, np.float64)
    note_index = np.asarray(note_index, np.int64)
    if count <= 0 or not len(deviation):
        return np.zeros(max(count, 0))
    position, in_note, frames = _note_frames(note_index, count)
    blocks = deviation[position]                                                          # [N, L] cents
    mask = vibrato_frames(blocks, in_note, frames)
    # Grouped by fitted span as the torch measure does (each group cut to its longest note), so the float64 work
    # stays bounded. Kept exactly: the trend basis is scaled to the group's width and the fit's ridge to that, which
    # moves a short noisy note's extent by up to ~0.005 cents between groupings.
    spans = np.where(mask, np.arange(mask.shape[1]) + 1, 0).max(-1)                       # [N] frames
    order = np.argsort(spans, kind="stable")
    sorted_spans = np.maximum(spans[order], 1)
    extent, rate = np.zeros(count), np.zeros(count)
    first = 0
    while first < count:  # one step per group, not per note
        sizes = np.arange(1, count - first + 1) * sorted_spans[first:]
        size = max(1, int(np.logical_and.accumulate(sizes <= VIBRATO_CHUNK_ELEMENTS).sum()))
        rows = order[first:first + size]
        width = int(sorted_spans[first + size - 1])
        extent[rows], rate[rows] = _vibrato_of_blocks(blocks[rows, :width], mask[rows, :width], frame_rate)
        first += size
    return extent * vibrato_gate(rate, frames / frame_rate, mask.sum(-1) / frame_rate)


def _note_frames(note_index: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each note's span, as :class:`mididdsp.expression.controls.NoteFrames` lays it out (L = the longest span).

    Returns position [N, L] int (frame index, clamped to the signal), in_note [N, L] bool (the frame belongs to
    the note) and frames [N] int (frames per note)."""
    length = len(note_index)
    frame = np.flatnonzero((note_index >= 0) & (note_index < count))
    ids = note_index[frame]
    first, last = np.full(count, length), np.full(count, -1)
    np.minimum.at(first, ids, frame)
    np.maximum.at(last, ids, frame)
    offset = np.arange(max(int(np.max(last - first + 1, initial=0)), 1))
    position = np.minimum(np.minimum(first, length - 1)[:, None] + offset, length - 1)
    in_note = (note_index[position] == np.arange(count)[:, None]) & (offset <= (last - first)[:, None])
    return position, in_note, np.bincount(ids, minlength=count)


def vibrato_frames(blocks: np.ndarray, in_note: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Which frames of each note the vibrato is fitted on, [N, L] bool, from the deviation blocks [N, L] (cents),
    the note's frames ``in_note`` [N, L] and its frame count ``frames`` [N]: the torch module's
    :func:`~mididdsp.expression.vibrato.vibrato_frames` (skipped ends, outliers, head and tail transitions)."""
    rows, offset = np.arange(len(blocks)), np.arange(blocks.shape[1])
    n = in_note.sum(-1)
    ordered = np.sort(np.where(in_note, blocks, np.inf), axis=-1)
    median = np.where(n > 0, ordered[rows, np.maximum(n - 1, 0) // 2], 0.0)  # the lower median, as torch's
    outlier = in_note & (np.abs(blocks - median[:, None]) > VIBRATO_OUTLIER_CENTS)
    count = frames[:, None]
    in_head = outlier & (2 * offset < count) & (offset < VIBRATO_TRANSITION_FRAMES)
    in_tail = outlier & (2 * offset >= count) & (offset >= count - VIBRATO_TRANSITION_FRAMES)
    head = np.where(in_head, offset + 1 + VIBRATO_SETTLE_FRAMES, 0).max(-1, keepdims=True)
    tail = np.where(in_tail, offset - VIBRATO_SETTLE_FRAMES, count).min(-1, keepdims=True)
    skip_head, skip_tail = VIBRATO_SKIP_FRAMES
    start, stop = np.maximum(head, skip_head), np.minimum(tail, count - skip_tail)
    return in_note & ~outlier & (offset >= start) & (offset < stop)


def _vibrato_of_blocks(blocks: np.ndarray, mask: np.ndarray, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Ungated (extent in cents, rate in Hz), [G] each, of deviation blocks [G, L] in cents over ``mask`` [G, L]."""
    start, stop, step = VIBRATO_SEARCH_HZ
    rates = start + step * np.arange(math.ceil((stop - start) / step))                    # [F] Hz
    explained, _ = sinusoid_periodogram(blocks, mask, rates, frame_rate)
    best = explained[:, 1:-1].argmax(-1) + 1
    rows = np.arange(len(blocks))
    left, centre, right = (explained[rows, best + shift] for shift in (-1, 0, 1))
    curvature = left - 2.0 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(curvature < 0, 0.5 * (left - right) / np.minimum(curvature, -1e-300), 0.0).clip(-0.5, 0.5)
    rate = rates[best] + delta * (rates[1] - rates[0])
    # Amplitude at the refined rate: over the whole span, and the high quantile over one-period windows.
    _, whole = sinusoid_periodogram(blocks, mask, rate[:, None], frame_rate)
    peak = _sliding_sinusoid_amplitude(blocks, mask, rate, frame_rate)
    return np.where(peak >= 0, peak, whole[:, 0]), rate


def sinusoid_periodogram(values: np.ndarray, weights: np.ndarray, rates_hz: np.ndarray,
                         frame_rate: float = FRAME_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of ``offset + drift * u + a cos(2 pi f t) + b sin(2 pi f t)`` at every candidate rate.

    Args:
        values: [G, L] signal per note (frame ``j`` at ``t = j / frame_rate``); weights: [G, L] (0 off-note).
        rates_hz: [F] candidate rates shared by all notes, or [G, F] per note.
    Returns:
        explained: [G, F] weighted energy the sinusoid explains beyond the trend; amplitude: [G, F] sqrt(a^2 + b^2).
    The [G, F] 4x4 normal equations carry the torch version's ridge, so the two solve the same systems.
    """
    x, w = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    g, length = x.shape
    poly = np.stack([np.ones(length), np.arange(length) / max(length - 1, 1)], -1)   # [L, P]: offset, drift
    p = poly.shape[1]
    t = np.arange(length, dtype=np.float64) / frame_rate
    rates = np.asarray(rates_hz, np.float64)
    phase = 2.0 * math.pi * rates[..., None] * t                                          # [F, L] or [G, F, L]
    cos, sin = np.cos(phase), np.sin(phase)
    n_rates = rates.shape[-1]

    def project(basis: np.ndarray, signal: np.ndarray) -> np.ndarray:  # sum over frames -> [G, F, K]
        if basis.ndim == 2:  # rates shared: one matrix product for all notes
            return np.tensordot(signal, basis, axes=(1, 1)).transpose(0, 2, 1)
        return basis @ signal

    wp = w[..., None] * poly                                                              # [G, L, P]
    column = w[..., None]                                                                 # [G, L, 1]
    gram = np.zeros((g, n_rates, p + 2, p + 2))
    gram[..., :p, :p] = (poly.T @ wp)[:, None]
    pc, ps = project(cos, wp), project(sin, wp)                                           # [G, F, P]
    gram[..., :p, p], gram[..., p, :p], gram[..., :p, p + 1], gram[..., p + 1, :p] = pc, pc, ps, ps
    gram[..., p, p] = project(cos * cos, column)[..., 0]
    gram[..., p + 1, p + 1] = project(sin * sin, column)[..., 0]
    gram[..., p, p + 1] = gram[..., p + 1, p] = project(cos * sin, column)[..., 0]
    wx = (w * x)[..., None]                                                               # [G, L, 1]
    rhs = np.concatenate([np.broadcast_to((poly.T @ wx).transpose(0, 2, 1), (g, n_rates, p)),
                          project(cos, wx), project(sin, wx)], -1)                        # [G, F, P + 2]
    ridge = 1e-9 * (1.0 + np.trace(gram, axis1=-2, axis2=-1))[..., None, None]
    eye = np.eye(p + 2)
    solution = np.linalg.solve(gram + ridge * eye, rhs[..., None])[..., 0]
    trend = np.linalg.solve(gram[:, 0, :p, :p] + ridge[:, 0] * eye[:p, :p], rhs[:, 0, :p, None])[..., 0]
    trend_explained = (rhs[:, 0, :p] * trend).sum(-1, keepdims=True)
    explained = (rhs * solution).sum(-1) - trend_explained
    return explained, np.sqrt(solution[..., p] ** 2 + solution[..., p + 1] ** 2)


def _sliding_sinusoid_amplitude(values: np.ndarray, mask: np.ndarray, rate_hz: np.ndarray,
                                frame_rate: float) -> np.ndarray:
    """Amplitude of a sinusoid at ``rate_hz`` [G] fitted (with an offset and a slope) to ``values`` [G, L] over
    every window of one period lying inside ``mask``, its 90th percentile over the windows; [G], -1 where no
    window fits. Window sums come from cumulative sums; only the full windows are solved (the torch version solves
    all and drops the rest, to the same numbers)."""
    g, length = values.shape
    m = mask.astype(np.float64)
    rate = np.maximum(rate_hz, 1e-3)
    period = np.clip(np.round(frame_rate / rate), 2, length).astype(np.int64)[:, None]  # [G, 1] frames
    t = np.arange(length, dtype=np.float64) / frame_rate
    phase = 2.0 * math.pi * rate[:, None] * t                                             # [G, L]
    basis = np.stack([np.ones_like(phase), np.broadcast_to(t, (g, length)), np.cos(phase), np.sin(phase)], -1)
    basis = basis * m[..., None]                                                          # [G, L, 4]
    products = np.concatenate([(basis[..., :, None] * basis[..., None, :]).reshape(g, length, 16),
                               basis * values[..., None], m[..., None]], -1)             # [G, L, 21]
    cumulative = np.pad(products.cumsum(1), ((0, 0), (1, 0), (0, 0)))                    # [G, L + 1, 21]
    starts = np.arange(length)
    stops = np.minimum(starts + period, length)                                           # [G, L]
    sums = np.take_along_axis(cumulative, stops[..., None], 1) - cumulative[:, :length]  # [G, L, 21] per window
    full = (sums[..., 20] >= period - 0.5) & (starts + period <= length)                  # all frames of a period
    sums = sums[full]                                                                     # [W, 21]
    gram = sums[:, :16].reshape(-1, 4, 4)
    ridge = 1e-9 * (1.0 + np.trace(gram, axis1=-2, axis2=-1))[:, None, None]
    fit = np.linalg.solve(gram + ridge * np.eye(4), sums[:, 16:20, None])[..., 0]         # [W, 4]
    windows = np.full((g, length), np.nan)
    windows[full] = np.sqrt(fit[:, 2] ** 2 + fit[:, 3] ** 2)
    fits = full.any(-1)
    extent = np.full(g, -1.0)
    if fits.any():  # a high quantile rather than the maximum: one glitch (a pitch jump) must not set the extent
        extent[fits] = np.nanquantile(windows[fits], VIBRATO_EXTENT_QUANTILE, axis=-1)
    return extent


def vibrato_gate(rate_hz: np.ndarray, duration_s: np.ndarray, analysed_s: np.ndarray) -> np.ndarray:
    """Weight in [0, 1] of a note's vibrato extent, [G], from its rate (Hz), duration (s) and the seconds the fit
    saw: the torch module's :func:`~mididdsp.expression.vibrato.vibrato_gate` (rate 3-9 Hz, note longer than
    200 ms, more than one cycle, each limit with a linear ramp)."""
    low, high = VIBRATO_RATE_RANGE_HZ
    rate_ramp, duration_ramp, cycle_ramp = VIBRATO_GATE_RAMPS

    def above(value: np.ndarray, limit: float, half_width: float) -> np.ndarray:
        return np.clip((value - limit) / (2.0 * half_width) + 0.5, 0.0, 1.0)

    return (above(rate_hz, low, rate_ramp) * above(-rate_hz, -high, rate_ramp)
            * above(duration_s, VIBRATO_MIN_NOTE_S, duration_ramp) * above(analysed_s * rate_hz, 1.0, cycle_ramp))
