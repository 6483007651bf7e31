"""The six per-note expression controls of MIDI-DDSP, computed from frame-level synthesis controls.

Inputs are the synthesis controls of :class:`mididdsp.dsp.DDSPSynth` (``f0_hz`` [B, T] Hz, ``amplitude`` [B, T]
linear, ``harmonic_distribution`` [B, T, K] summing to 1 per frame, ``noise_magnitudes`` [B, T, M] linear) and the
note of every frame (``note_index`` [B, T], -1 in rests, as made by :func:`mididdsp.score.note_frames`). Every
note is handled at once: each note's frames are gathered into a padded ``[notes, max_note_frames]`` block with a
mask, and all reductions are masked tensor reductions (no Python loop over notes or frames).

Per frame (same semantics as MIDI-DDSP; ``n`` = the note's frame count, frame rate 250 Hz):
    a_dB(t)     = 20 log10 A(t), floored at -80 dB                      (A: harmonic amplitude)
    c(t)        = sum_k k h_k(t) / sum_k h_k(t)                          (harmonic centroid, in harmonic numbers)
    noise_dB(t) = mean over bands of 20 log10 N_b(t), each floored at -80 dB
    d(t)        = 1200 log2(f0(t) / f_note), in cents

Per note, the physical quantity and its documented [0, 1] scale ``clip((x - low) / (high - low), 0, 1)``. The
ranges are the model's own (``expression_ranges`` in its config, measured on its training notes by
:mod:`mididdsp.expression.calibrate`, passed as ``ranges``); without them, the fixed :data:`CONTROL_RANGES`:

    volume               volume_db             = mean a_dB                           -60 .. 0 dB
    volume_fluctuation   volume_fluctuation_db = std a_dB (population)               0 .. 12 dB
    volume_peak_position peak_position         = mean (frame - first frame) / n      0 .. 1 (already a fraction)
                                                 over the frames within 1 dB of max a_dB,
                                                 the first and last 8 frames left out
    vibrato              vibrato_extent_cents  = sinusoid amplitude (vibrato.py)     0 .. 60 cents
                         vibrato_rate_hz       = its rate (vibrato.py)               (no scaled twin)
    brightness           brightness_centroid   = mean c                              1 .. 8 harmonics
    attack_noise         attack_noise_db       = mean noise_dB over the first 10 frames (40 ms)  -80 .. -30 dB

The fixed ranges were chosen from the notes of the SoundFont corpus (4 instruments, analysis path, 1st..99th
percentiles: volume -37..-9 dB at the corpus's recording level, fluctuation 1.5..14 dB, extent 0..78 cents,
centroid 1.1..7.2) so that real notes use the whole 0..1 scale; the volume range is generous (-60..0 dBFS-like
levels) because recordings differ in level; a trained model's controls sit elsewhere (the shipped synthesis
coder's volume used only 0.00-0.60 of this scale), hence the per-model ranges. A value outside its range is
clipped (the physical column keeps the exact value).

Vibrato: extent and rate from a least-squares sinusoid fit to the deviation d(t), see
:mod:`mididdsp.expression.vibrato`.

Differentiable: volume, volume_fluctuation, brightness, attack_noise (and their physical twins), except where a
scaled value is clipped at 0 or 1. The peak position (a thresholded mean) and the vibrato gate are not.
Peak position: MIDI-DDSP took the argmax; on a nearly flat note that jumps between far-apart frames with every
0.1 dB of flicker, so here it is the mean position of the note's top (within :data:`PEAK_TOLERANCE_DB`), which
equals the argmax for a clear peak and the middle of a plateau otherwise. Its search leaves out each note's first
and last :data:`PEAK_EDGE_FRAMES` frames, where the neighbours' level still reads (neutral-reference r on swell
notes 0.831 -> 0.974).
Published defects fixed here: fixed constants that no note reaches, vibrato without unit or rate, and the
vibrato frequency axis (MIDI-DDSP used 250/999 Hz per bin; here the rates are in Hz by construction).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from mididdsp.dsp.core import DB_FLOOR, FRAME_RATE, amplitude_to_db
from mididdsp.expression.names import (CONTROL_NAMES, CONTROL_RANGES, LEVEL_CONTROLS, LEVEL_OFFSET,  # noqa: F401
                                       PHYSICAL_NAMES, PHYSICAL_OF, PHYSICAL_UNITS, control_ranges)
from mididdsp.expression.vibrato import vibrato

ATTACK_FRAMES = 10
PEAK_SMOOTHING_FRAMES = 1  # no smoothing: 11 and 25 frames scored worse on the corpus
PEAK_TOLERANCE_DB = 1.0  # frames this close to a note's loudest frame count as its peak
PEAK_EDGE_FRAMES = 8  # frames at either end of a note left out of the peak search (32 ms: half the log-mel window)


def scale_control(name: str, physical: torch.Tensor, ranges: Mapping[str, Sequence[float]] | None = None
                  ) -> torch.Tensor:
    """Physical value -> scaled control in [0, 1]: ``clip((x - low) / (high - low), 0, 1)`` with the control's
    range from ``ranges`` (default :data:`CONTROL_RANGES`)."""
    low, high = control_ranges(ranges)[name]
    return ((torch.as_tensor(physical) - low) / (high - low)).clamp(0.0, 1.0)


def unscale_control(name: str, scaled: torch.Tensor, ranges: Mapping[str, Sequence[float]] | None = None
                    ) -> torch.Tensor:
    """Scaled control in [0, 1] -> physical value, the inverse of :func:`scale_control` inside the range."""
    low, high = control_ranges(ranges)[name]
    return low + torch.as_tensor(scaled) * (high - low)


def reference_level(ranges: Mapping[str, Sequence[float]] | None = None, references: Mapping[str, float] | None = None,
                    instrument: str | None = None) -> float:
    """The level (dB) a recording's median note is put at: the instrument's calibrated reference
    (``reference_levels_db`` of a model, :mod:`mididdsp.expression.calibrate`), else the middle of the volume range."""
    if references and instrument in references:
        return float(references[instrument])
    low, high = control_ranges(ranges)["volume"]
    return 0.5 * (low + high)


def level_offset(volume_db: torch.Tensor, present: torch.Tensor, reference_db: float) -> torch.Tensor:
    """One recording's (or track's) level offset, dB: the median ``volume_db`` of its ``present`` notes (both
    [notes]) minus ``reference_db``; 0 when no note is present. A scalar tensor."""
    levels = torch.as_tensor(volume_db, dtype=torch.float32)[torch.as_tensor(present, dtype=torch.bool)]
    if levels.numel() == 0:
        return torch.zeros(())
    return levels.median() - float(reference_db)


def relative_levels(values: dict[str, torch.Tensor], offset_db: torch.Tensor,
                    ranges: Mapping[str, Sequence[float]] | None = None) -> dict[str, torch.Tensor]:
    """:func:`note_expression`'s output with its absolute levels made relative to the recording: the physical
    twins of :data:`LEVEL_CONTROLS` minus ``offset_db`` (per note, broadcastable to [..., notes]), their scaled
    controls recomputed, and ``level_offset_db`` added. Absent notes keep 0 controls and an offset of 0."""
    out = dict(values)
    present = values["present"]
    offset = torch.where(present, torch.as_tensor(offset_db, dtype=torch.float32).expand(present.shape),
                         torch.zeros(present.shape))
    resolved = control_ranges(ranges)
    for name in LEVEL_CONTROLS:
        physical = PHYSICAL_OF[name]
        if physical not in values:
            continue
        relative = torch.where(present, values[physical] - offset, values[physical])
        out[physical] = relative
        out[name] = torch.where(present, scale_control(name, relative, resolved), torch.zeros_like(relative))
    out[LEVEL_OFFSET] = offset
    return out


# ------------------------------------------------------------------------------------------------ per frame
def frame_features(controls: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Synthesis controls -> the per-frame signals the controls reduce, each [B, T] (or [T]).

    ``amplitude_db`` (dB, floor -80), ``centroid`` (harmonic number, needs ``harmonic_distribution``),
    ``noise_db`` (dB, needs ``noise_magnitudes``). Missing inputs give missing outputs.
    """
    out = {"amplitude_db": amplitude_to_db(controls["amplitude"], DB_FLOOR)}
    if "harmonic_distribution" in controls:
        distribution = controls["harmonic_distribution"]
        k = torch.arange(1, distribution.shape[-1] + 1, dtype=distribution.dtype, device=distribution.device)
        out["centroid"] = (distribution * k).sum(-1) / distribution.sum(-1).clamp_min(1e-7)
    if "noise_magnitudes" in controls:
        out["noise_db"] = amplitude_to_db(controls["noise_magnitudes"], DB_FLOOR).mean(-1)
    return out


def deviation_cents(f0_hz: torch.Tensor, note_pitch: torch.Tensor) -> torch.Tensor:
    """f0 [...] Hz against the note's MIDI pitch [...] (broadcast) -> deviation in cents (f0 floored at 1 mHz)."""
    reference_hz = 440.0 * torch.pow(2.0, (note_pitch - 69.0) / 12.0)
    return 1200.0 * torch.log2(f0_hz.clamp_min(1e-3) / reference_hz)


# ------------------------------------------------------------------------------------------------ gathering
class NoteFrames:
    """Where each note's frames lie, for padded gathering: built once from ``note_index`` [B, T].

    Notes are numbered per batch row 0 .. n_notes - 1. Attributes (G = B * n_notes global notes, L = the longest
    note's span in frames): ``flat_index`` [G, L] long, index into the flattened [B * T] frames; ``mask`` [G, L]
    bool, the frame belongs to the note; ``count`` [G] frames per note; ``offset`` [G, L] frames since the note's
    first frame; ``present`` [G] the note has at least one frame.
    """

    def __init__(self, note_index: torch.Tensor, n_notes: int | None = None):
        note_index = note_index if note_index.dim() == 2 else note_index.unsqueeze(0)
        note_index = note_index.long()
        batch, frames = note_index.shape
        self.batch = batch
        if n_notes is None:
            n_notes = int(note_index.max().item()) + 1 if note_index.numel() else 0
        self.n_notes = max(int(n_notes), 0)
        n_global = batch * self.n_notes
        device = note_index.device
        valid = (note_index >= 0) & (note_index < self.n_notes)
        rows = torch.arange(batch, device=device).unsqueeze(1).expand(batch, frames)
        global_id = torch.where(valid, rows * self.n_notes + note_index, torch.full_like(note_index, n_global))
        time = torch.arange(frames, device=device).expand(batch, frames)
        ids, times = global_id.reshape(-1), time.reshape(-1)
        # Segment min/max/count of frame times, with one extra slot collecting the rest frames.
        first = torch.full((n_global + 1,), frames, dtype=torch.long, device=device)
        first = first.scatter_reduce(0, ids, times, "amin")
        last = torch.full((n_global + 1,), -1, dtype=torch.long, device=device).scatter_reduce(0, ids, times, "amax")
        count = torch.bincount(ids, minlength=n_global + 1)
        first, last, self.count = first[:n_global], last[:n_global], count[:n_global]
        self.present = self.count > 0
        span = int((last - first + 1).clamp_min(0).max().item()) if n_global else 0
        span = max(span, 1)
        self.offset = torch.arange(span, device=device).expand(n_global, span)
        position = (first.clamp_max(frames - 1).unsqueeze(1) + self.offset).clamp_max(frames - 1)
        note_row = torch.arange(n_global, device=device) // max(self.n_notes, 1)
        self.flat_index = note_row.unsqueeze(1) * frames + position
        self.mask = (global_id.reshape(-1)[self.flat_index] == torch.arange(n_global, device=device).unsqueeze(1))
        self.mask &= self.offset <= (last - first).unsqueeze(1)

    def gather(self, signal: torch.Tensor) -> torch.Tensor:
        """[B, T] (or [T]) frame signal -> [G, L] note blocks (values outside the mask are arbitrary)."""
        return signal.reshape(-1)[self.flat_index]

    def per_note(self, values: torch.Tensor) -> torch.Tensor:
        """[G] per-note values -> [B, n_notes]."""
        return values.reshape(self.batch, self.n_notes)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [G, L] over ``mask`` [G, L] -> [G] (0 for an empty row)."""
    weights = mask.to(values.dtype)
    return (values * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)


def masked_std(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population standard deviation over ``mask`` -> [G]; differentiable (eps inside the square root)."""
    mean = masked_mean(values, mask).unsqueeze(-1)
    variance = masked_mean((values - mean) ** 2, mask)
    return torch.sqrt(variance + 1e-12) - 1e-6  # gradient-safe at zero variance, exact to 1e-6 dB


# ------------------------------------------------------------------------------------------------ controls
def smooth_frames(signal: torch.Tensor, width: int) -> torch.Tensor:
    """Centred moving average of ``width`` (odd) frames along the last axis of [B, T], edges held."""
    if width <= 1:
        return signal
    padded = torch.nn.functional.pad(signal.unsqueeze(1), (width // 2, width // 2), mode="replicate")
    kernel = torch.full((1, 1, width), 1.0 / width, dtype=signal.dtype, device=signal.device)
    return torch.nn.functional.conv1d(padded, kernel).squeeze(1)


def peak_position(amplitude_db: torch.Tensor, notes: NoteFrames, smoothing: int = PEAK_SMOOTHING_FRAMES,
                  tolerance_db: float = PEAK_TOLERANCE_DB, edge_frames: int = PEAK_EDGE_FRAMES) -> torch.Tensor:
    """Where in the note the level peaks, [G] in [0, 1): the mean position ``(frame - first frame) / n`` of the
    frames whose a_dB (smoothed over ``smoothing`` frames) lies within ``tolerance_db`` of the note's maximum,
    searched over the note without its first and last ``edge_frames`` frames (all frames when the note has
    fewer than ``2 * edge_frames + 2``).

    With a clear peak this is the argmax (MIDI-DDSP's definition) to within the width of the peak's top; on a
    nearly flat note, where the argmax jumps between far-apart frames with every 0.1 dB of flicker, it settles
    at the middle of the plateau instead. The edges are left out because a note's first and last frames carry
    its neighbours' level: the previous note's release rings under the onset, and the synthesis coder's
    64 ms log-mel window (32 ms = 8 frames either side) straddles the boundary, so a swell that starts soft
    after a loud note otherwise reads its peak at 0.
    """
    level = smooth_frames(amplitude_db.reshape(notes.batch, -1), smoothing)
    count = notes.count.unsqueeze(1)
    inner = (notes.offset >= edge_frames) & (notes.offset < count - edge_frames)
    search = notes.mask & (inner | (count < 2 * edge_frames + 2))
    blocks = notes.gather(level).masked_fill(~search, -math.inf)
    top = (blocks >= blocks.amax(-1, keepdim=True) - tolerance_db) & search
    position = notes.offset.to(amplitude_db.dtype) / notes.count.clamp_min(1).unsqueeze(1).to(amplitude_db.dtype)
    return masked_mean(position, top)


def attack_mean(signal: torch.Tensor, notes: NoteFrames, n_frames: int = ATTACK_FRAMES) -> torch.Tensor:
    """Mean of ``signal`` [B, T] over each note's first ``n_frames`` frames (fewer if the note is shorter), [G]."""
    return masked_mean(notes.gather(signal), notes.mask & (notes.offset < n_frames))


def note_expression(controls: dict[str, torch.Tensor], note_index: torch.Tensor, note_pitch: torch.Tensor,
                    n_notes: int | None = None, frame_rate: float = FRAME_RATE,
                    ranges: Mapping[str, Sequence[float]] | None = None) -> dict[str, torch.Tensor]:
    """Every note's six controls and their physical quantities, all notes at once.

    Args:
        controls: ``f0_hz`` [B, T] Hz, ``amplitude`` [B, T] linear, optionally ``harmonic_distribution``
            [B, T, K] and ``noise_magnitudes`` [B, T, M] (brightness / attack noise are left out without them).
            [T]-shaped (unbatched) inputs are accepted as well.
        note_index: [B, T] (or [T]) int, the note of each frame (0 .. n_notes - 1 per row), -1 in rests.
        note_pitch: [B, n_notes] (or [n_notes]) MIDI pitch of each note (vibrato is measured against it).
        n_notes: notes per row (default: the largest index + 1).
        ranges: the scaled controls' ``(low, high)`` (a model's ``expression_ranges``; default
            :data:`CONTROL_RANGES`), see :func:`control_ranges`.
    Returns:
        dict of [B, n_notes] (or [n_notes]) tensors: the scaled controls (:data:`CONTROL_NAMES`, in [0, 1]), the
        physical quantities (:data:`PHYSICAL_NAMES`) and ``present`` (bool: the note has at least one frame;
        other notes read 0). Values are differentiable as described in the module docstring.
    """
    unbatched = note_index.dim() == 1
    if unbatched:
        controls = {key: value.unsqueeze(0) for key, value in controls.items()}
        note_index, note_pitch = note_index.unsqueeze(0), torch.as_tensor(note_pitch).unsqueeze(0)
    notes = NoteFrames(note_index, n_notes)
    if notes.n_notes == 0:
        empty = torch.zeros(note_index.shape[0], 0, device=note_index.device)
        out = {name: empty for name in (*CONTROL_NAMES, *PHYSICAL_NAMES)}
        out["present"] = empty.bool()
        return {key: value.squeeze(0) for key, value in out.items()} if unbatched else out
    features = frame_features(controls)
    level = features["amplitude_db"]
    blocks = notes.gather(level)
    physical = {"volume_db": masked_mean(blocks, notes.mask), "volume_fluctuation_db": masked_std(blocks, notes.mask),
                "peak_position": peak_position(level, notes)}
    pitch = torch.as_tensor(note_pitch, dtype=level.dtype, device=level.device)[:, :notes.n_notes]
    frame_pitch = pitch.gather(1, note_index.long().clamp(0, notes.n_notes - 1))  # [B, T] the note's pitch
    extent, rate = vibrato(deviation_cents(controls["f0_hz"], frame_pitch), notes, frame_rate)
    physical["vibrato_extent_cents"], physical["vibrato_rate_hz"] = extent, rate
    if "centroid" in features:
        physical["brightness_centroid"] = masked_mean(notes.gather(features["centroid"]), notes.mask)
    if "noise_db" in features:
        physical["attack_noise_db"] = attack_mean(features["noise_db"], notes)
    present = notes.present
    out: dict[str, torch.Tensor] = {}
    for name, value in physical.items():
        out[name] = notes.per_note(torch.where(present, value, torch.zeros_like(value)))
    resolved = control_ranges(ranges)
    for name in CONTROL_NAMES:
        if PHYSICAL_OF[name] in physical:
            scaled = scale_control(name, physical[PHYSICAL_OF[name]], resolved)
            out[name] = notes.per_note(torch.where(present, scaled, torch.zeros_like(scaled)))
    out["present"] = notes.per_note(present)
    return {key: value.squeeze(0) for key, value in out.items()} if unbatched else out
