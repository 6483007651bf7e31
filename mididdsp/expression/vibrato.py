"""Vibrato extent and rate of every note, from its f0 deviation in cents (one of the six controls of
:mod:`mididdsp.expression.controls`; all notes at once, as there).

The published method looked for the spectral peak of the mean-removed, Tukey-tapered deviation; its frequency
axis was off, and on notes of 0.25-0.5 s with a delayed vibrato a zero-padded FFT peak is biased by 1-2 Hz.

Here the deviation over the note is fitted by least squares with ``offset + drift * t + a cos(2 pi f t) +
b sin(2 pi f t)`` for every candidate f from 1 to 15 Hz in 0.05 Hz steps (a least-squares periodogram: for a long
stationary note its peak is the FFT's peak); the best f is refined by parabolic interpolation and is the rate.
Left out of the fit (:func:`vibrato_frames`): the first 40 ms and last 20 ms (onset scoops; CREPE's 64 ms window
smears the transition), any frame more than 90 cents from the note's median deviation (octave errors), and the
whole transition when such outliers sit near an end (a legato note's first 50-130 ms often still read the
previous pitch; on the SoundFont corpus this lifted the extent's correlation with the neutral-render reference
from 0.914 to 0.966).

The extent is the fitted amplitude ``sqrt(a^2 + b^2)`` at that rate over the windows of one period inside the
note, its 90th percentile over the windows (so a vibrato that starts late or fades in is measured at its full
depth, and one pitch glitch does not decide it), or the whole-note amplitude when no full period fits. It is
weighted by the published gate (rate at 3-9 Hz, note longer than 200 ms, more than one cycle within the fitted
frames) made continuous by short ramps around each limit (:func:`vibrato_gate`): 0 outside, 1 inside, so a short
note whose rate estimate sits near a limit does not flip between 0 and its full extent (on the SoundFont corpus
the continuous gate lifted the extent's correlation with the neutral-render reference from 0.898 to 0.914).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from mididdsp.dsp.constants import FRAME_RATE
from mididdsp.expression.vibrato_settings import (  # noqa: F401 (re-exported: importable from here too)
    VIBRATO_CHUNK_ELEMENTS, VIBRATO_EXTENT_QUANTILE, VIBRATO_GATE_RAMPS, VIBRATO_MIN_NOTE_S, VIBRATO_OUTLIER_CENTS,
    VIBRATO_RATE_RANGE_HZ, VIBRATO_SEARCH_HZ, VIBRATO_SETTLE_FRAMES, VIBRATO_SKIP_FRAMES, VIBRATO_TRANSITION_FRAMES)

if TYPE_CHECKING:
    from mididdsp.expression.controls import NoteFrames


def _trend_basis(length: int, device: torch.device) -> torch.Tensor:
    """[L, 2] float64 basis 1, u with u = 0 .. 1 across the block: the slow pitch trend (offset and drift).

    A quadratic trend was measured to do worse: on short notes it absorbs half a vibrato cycle."""
    u = torch.arange(length, dtype=torch.float64, device=device) / max(length - 1, 1)
    return torch.stack([torch.ones_like(u), u], dim=-1)


def sinusoid_periodogram(values: torch.Tensor, weights: torch.Tensor, rates_hz: torch.Tensor,
                         frame_rate: float = FRAME_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares fit of ``trend + a cos(2 pi f t) + b sin(2 pi f t)`` at every candidate rate, every note.

    Args:
        values: [G, L] signal per note (frame ``j`` at time ``j / frame_rate``); weights: [G, L] (0 off-note).
        rates_hz: [F] candidate rates shared by all notes, or [G, F] per note. The trend (offset + linear drift)
            is fitted jointly.
    Returns:
        explained: [G, F] weighted energy the sinusoid explains beyond the trend (the periodogram; for a long,
        stationary note it is proportional to the squared FFT magnitude at f); amplitude: [G, F] sqrt(a^2 + b^2).
    All sums are matrix products over the frames; the [G, F] 5x5 normal equations are solved in float64.
    """
    x, w = values.double(), weights.double()
    g, length = x.shape
    poly = _trend_basis(length, x.device)                                             # [L, P]
    p = poly.shape[1]
    t = torch.arange(length, dtype=torch.float64, device=x.device) / frame_rate
    rates = rates_hz.double()
    rates = rates.view(1, -1) if rates.dim() == 1 else rates                          # [1 or G, F]
    phase = 2.0 * math.pi * rates.unsqueeze(-1) * t                                   # [1 or G, F, L]
    cos, sin = torch.cos(phase), torch.sin(phase)
    n_rates = rates.shape[1]
    shared = "fl" if rates.shape[0] == 1 else "gfl"  # einsum, not matmul: no [G, F, L] copy of shared rows
    cos, sin = (c[0] if rates.shape[0] == 1 else c for c in (cos, sin))

    def project(basis: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:  # sum over frames -> [G, F, K]
        return torch.einsum(f"{shared},glk->gfk", basis, signal)

    wp = w.unsqueeze(-1) * poly                                                        # [G, L, P]
    column = w.unsqueeze(-1)                                                           # [G, L, 1]
    gram = x.new_zeros(g, n_rates, p + 2, p + 2)
    gram[..., :p, :p] = (poly.T @ wp).unsqueeze(1)
    pc, ps = project(cos, wp), project(sin, wp)                                        # [G, F, P]
    gram[..., :p, p], gram[..., p, :p], gram[..., :p, p + 1], gram[..., p + 1, :p] = pc, pc, ps, ps
    gram[..., p, p] = project(cos * cos, column).squeeze(-1)
    gram[..., p + 1, p + 1] = project(sin * sin, column).squeeze(-1)
    gram[..., p, p + 1] = gram[..., p + 1, p] = project(cos * sin, column).squeeze(-1)
    wx = (w * x).unsqueeze(-1)                                                         # [G, L, 1]
    rhs = torch.cat([(poly.T @ wx).transpose(1, 2).expand(g, n_rates, p),
                     project(cos, wx), project(sin, wx)], dim=-1)                      # [G, F, P + 2]
    ridge = 1e-9 * (1.0 + gram.diagonal(dim1=-2, dim2=-1).sum(-1))[..., None, None]
    eye = torch.eye(p + 2, dtype=x.dtype, device=x.device)
    solution = torch.linalg.solve(gram + ridge * eye, rhs.unsqueeze(-1)).squeeze(-1)
    trend = torch.linalg.solve(gram[:, 0, :p, :p] + ridge[:, 0] * eye[:p, :p], rhs[:, 0, :p].unsqueeze(-1))
    trend_explained = (rhs[:, 0, :p] * trend.squeeze(-1)).sum(-1, keepdim=True)
    explained = (rhs * solution).sum(-1) - trend_explained
    return explained, torch.sqrt(solution[..., p] ** 2 + solution[..., p + 1] ** 2)


def _sliding_sinusoid_amplitude(values: torch.Tensor, mask: torch.Tensor, rate_hz: torch.Tensor,
                                frame_rate: float) -> torch.Tensor:
    """Amplitude of a sinusoid at ``rate_hz`` [G] fitted (with an offset and a slope) to ``values`` [G, L] over
    every window of one period lying inside ``mask``, its 90th percentile over the windows; [G], -1 where no
    window fits. Window sums come from cumulative sums, so all windows of all notes are solved at once (float64).
    """
    g, length = values.shape
    x = values.double()
    m = mask.double()
    rate = rate_hz.double().clamp_min(1e-3)
    period = torch.clamp(torch.round(frame_rate / rate), 2, length).long()                # [G] frames
    t = torch.arange(length, dtype=torch.float64, device=x.device) / frame_rate
    phase = 2.0 * math.pi * rate.unsqueeze(1) * t                                         # [G, L]
    basis = torch.stack([torch.ones_like(phase), t.expand(g, length), torch.cos(phase), torch.sin(phase)], -1)
    basis = basis * m.unsqueeze(-1)
    products = torch.cat([torch.einsum("gli,glj->glij", basis, basis).reshape(g, length, 16),
                          basis * x.unsqueeze(-1), m.unsqueeze(-1)], dim=-1)              # [G, L, 21]
    cumulative = torch.nn.functional.pad(products.cumsum(1), (0, 0, 1, 0))                # [G, L + 1, 21]
    starts = torch.arange(length, device=x.device).expand(g, length)
    stops = (starts + period.unsqueeze(1)).clamp_max(length)
    sums = cumulative.gather(1, stops.unsqueeze(-1).expand(-1, -1, 21)) - cumulative[:, :length]
    gram = sums[..., :16].reshape(g, length, 4, 4)
    ridge = 1e-9 * (1.0 + gram.diagonal(dim1=-2, dim2=-1).sum(-1))[..., None, None]   # keeps empty windows solvable
    gram = gram + ridge * torch.eye(4, dtype=x.dtype, device=x.device)
    fit = torch.linalg.solve(gram, sums[..., 16:20].unsqueeze(-1)).squeeze(-1)            # [G, L, 4]
    amplitude = torch.sqrt(fit[..., 2] ** 2 + fit[..., 3] ** 2)
    full = (sums[..., 20] >= period.unsqueeze(1).double() - 0.5) & (starts + period.unsqueeze(1) <= length)
    windows = torch.where(full, amplitude, torch.full_like(amplitude, math.nan))
    # A high quantile rather than the maximum: one glitch (a pitch jump) must not set the extent.
    extent = torch.nanquantile(windows, VIBRATO_EXTENT_QUANTILE, dim=-1)
    return torch.where(full.any(-1), extent, torch.full_like(extent, -1.0)).to(values.dtype)


def _vibrato_of_blocks(blocks: torch.Tensor, mask: torch.Tensor, frame_rate: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ungated (extent, rate) [G] of deviation blocks [G, L] in cents over ``mask`` [G, L]."""
    with torch.no_grad():
        rates = torch.arange(*VIBRATO_SEARCH_HZ, dtype=torch.float64, device=blocks.device)
        explained, _ = sinusoid_periodogram(blocks, mask, rates, frame_rate)
        best = explained[:, 1:-1].argmax(-1) + 1
        left, centre, right = (explained.gather(1, (best + shift).unsqueeze(1)).squeeze(1) for shift in (-1, 0, 1))
        curvature = left - 2.0 * centre + right
        delta = torch.where(curvature < 0, 0.5 * (left - right) / curvature.clamp_max(-1e-300),
                            torch.zeros_like(centre)).clamp(-0.5, 0.5)
        rate = rates[best] + delta * (rates[1] - rates[0])                            # [G] Hz
    # Amplitude at the refined rate: over the whole span, and the high quantile over one-period windows.
    _, whole = sinusoid_periodogram(blocks, mask, rate.unsqueeze(1), frame_rate)
    whole = whole.squeeze(1).to(blocks.dtype)
    with torch.no_grad():
        peak = _sliding_sinusoid_amplitude(blocks, mask, rate.to(blocks.dtype), frame_rate)
    return torch.where(peak >= 0, peak, whole), rate.to(blocks.dtype)


def vibrato_frames(blocks: torch.Tensor, notes: NoteFrames) -> torch.Tensor:
    """Which frames of each note the vibrato is fitted on: [G, L] bool, from the deviation blocks [G, L] in cents.

    Left out: the first and last :data:`VIBRATO_SKIP_FRAMES` (10 and 5) frames (onset scoops; CREPE's 64 ms window
    straddles the neighbouring note); every frame farther than :data:`VIBRATO_OUTLIER_CENTS` from the note's
    median deviation (octave errors, glides); and the whole transition at either end: within the first
    :data:`VIBRATO_TRANSITION_FRAMES` frames (and the first half) of a note, everything up to
    :data:`VIBRATO_SETTLE_FRAMES` after its last such outlier, and likewise before the first outlier within the
    last ones. An outlier farther inside is left out on its own. A legato successor's first 50-130 ms often still read
    the previous pitch (the previous sample's release rings under the new note), and a hard cut at the outlier
    threshold would leave the tail of that glide in the fit as a large fake cycle.
    """
    skip_head, skip_tail = VIBRATO_SKIP_FRAMES
    median = blocks.detach().masked_fill(~notes.mask, math.nan).nanmedian(-1).values.nan_to_num(0.0)
    outlier = notes.mask & ((blocks.detach() - median.unsqueeze(1)).abs() > VIBRATO_OUTLIER_CENTS)
    count, offset = notes.count.unsqueeze(1), notes.offset
    in_head = outlier & (2 * offset < count) & (offset < VIBRATO_TRANSITION_FRAMES)
    in_tail = outlier & (2 * offset >= count) & (offset >= count - VIBRATO_TRANSITION_FRAMES)
    head = torch.where(in_head, offset + 1 + VIBRATO_SETTLE_FRAMES, torch.zeros_like(offset)).amax(-1, keepdim=True)
    tail = torch.where(in_tail, offset - VIBRATO_SETTLE_FRAMES, count.expand_as(offset)).amin(-1, keepdim=True)
    start = head.clamp_min(skip_head)
    stop = torch.minimum(tail, count - skip_tail)
    return notes.mask & ~outlier & (offset >= start) & (offset < stop)


def vibrato(deviation: torch.Tensor, notes: NoteFrames, frame_rate: float = FRAME_RATE
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Vibrato extent (cents) and rate (Hz) per note, [G] each, from the f0 deviation [B, T] in cents.

    See the module docstring for the method. The extent is weighted by :func:`vibrato_gate`; both are 0 where
    the gate is 0.
    """
    blocks = notes.gather(deviation)
    mask = vibrato_frames(blocks, notes)
    # Notes in groups of similar length, each group's block cut to its longest note, so the float64 work
    # (about 200 bytes per note frame) stays bounded and no time is spent on padding after a long note.
    spans = torch.where(mask, notes.offset + 1, torch.zeros_like(notes.offset)).amax(-1)
    order = torch.argsort(spans)
    sorted_spans = spans[order].clamp_min(1)
    extent, rate = torch.zeros_like(blocks[:, 0]), torch.zeros_like(blocks[:, 0])
    first = 0
    while first < len(order):  # one step per group, not per note
        sizes = torch.arange(1, len(order) - first + 1, device=spans.device) * sorted_spans[first:]
        count = max(1, int((sizes <= VIBRATO_CHUNK_ELEMENTS).long().cumprod(0).sum().item()))
        rows = order[first:first + count]
        width = int(sorted_spans[first + count - 1].item())
        extent[rows], rate[rows] = _vibrato_of_blocks(blocks[rows, :width], mask[rows, :width], frame_rate)
        first += count
    gate = vibrato_gate(rate, notes.count.to(deviation.dtype) / frame_rate,
                        mask.sum(-1).to(deviation.dtype) / frame_rate)
    return extent * gate, torch.where(gate > 0, rate, torch.zeros_like(rate))


def vibrato_gate(rate_hz: torch.Tensor, duration_s: torch.Tensor, analysed_s: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Weight in [0, 1] of a note's vibrato extent, [G]: MIDI-DDSP's gate (rate 3-9 Hz, note longer than 200 ms,
    more than one cycle) made continuous. Each limit gets a linear ramp of :data:`VIBRATO_GATE_RAMPS` half-width
    (0.5 Hz, 50 ms, 0.25 cycle): 1 well inside, 0 well outside, 0.5 at the published limit. A hard gate turns a
    small error in a short note's rate or length into the whole extent; the ramps keep the control continuous.
    The cycles are counted over ``analysed_s`` (the frames the fit saw, :func:`vibrato_frames`) when given,
    else over the note's ``duration_s``."""
    low, high = VIBRATO_RATE_RANGE_HZ
    rate_ramp, duration_ramp, cycle_ramp = VIBRATO_GATE_RAMPS
    seen_s = duration_s if analysed_s is None else analysed_s

    def above(value: torch.Tensor, limit: float, half_width: float) -> torch.Tensor:
        return ((value - limit) / (2.0 * half_width) + 0.5).clamp(0.0, 1.0)

    return (above(rate_hz, low, rate_ramp) * above(-rate_hz, -high, rate_ramp)
            * above(duration_s, VIBRATO_MIN_NOTE_S, duration_ramp) * above(seen_s * rate_hz, 1.0, cycle_ramp))
