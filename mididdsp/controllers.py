"""What a MIDI file's own controllers do to a render, beside the note expression: CC7 and CC11 scale the level,
CC1 deepens the vibrato, and a pitch bend that already carries vibrato takes the place of the prior's.

Arrays are numpy, one value per 250 Hz frame (:meth:`mididdsp.score.Track.control_frames`); kept free of torch so
that :mod:`mididdsp.render` can import it at module level.
"""
from __future__ import annotations

import math
from typing import Any

from mididdsp.dsp.constants import FRAME_RATE

MODULATION_VIBRATO = 0.5    # CC1 at 127 adds this much of the vibrato scale
BEND_VIBRATO_CENTS = 5.0    # a note whose pitch bend carries at least this much vibrato plays the file's own
DEFAULT_VIBRATO_RATE_HZ = 5.5


def midi_volume_gain(cc7, cc11):
    """General MIDI level law: CC7 and CC11 each give 40 log10(value / 127) dB; linear gain [frames], float32."""
    import numpy as np

    db = 40 * np.log10(np.maximum(cc7, 0.5) / 127.0) + 40 * np.log10(np.maximum(cc11, 0.5) / 127.0)
    return np.power(10.0, np.maximum(db, -100.0) / 20.0).astype(np.float32)


def apply_modulation(controls, notes, cc1):
    """Deepen each note's vibrato by its mean CC1 (127 adds :data:`MODULATION_VIBRATO` of the scale); a note
    given vibrato this way without a rate gets :data:`DEFAULT_VIBRATO_RATE_HZ`. controls [N, 7] float32."""
    import numpy as np

    if not np.any(cc1 > 0):
        return controls
    controls = controls.copy()
    for i, (start, end, _, _) in enumerate(notes):
        first = int(round(start * FRAME_RATE))
        last = max(int(round(end * FRAME_RATE)), first + 1)
        amount = float(np.mean(cc1[first:last])) / 127.0 if last > first and first < len(cc1) else 0.0
        if amount > 0:
            controls[i, 3] = min(1.0, controls[i, 3] + MODULATION_VIBRATO * amount)
            if controls[i, 6] < 1.0:
                controls[i, 6] = DEFAULT_VIBRATO_RATE_HZ
    return controls


def leave_vibrato_to_bends(score, voices: list, sampled, fixed_mask=None) -> None:
    """Zero the sampled vibrato (``sampled`` [voices, notes, 7], rows in ``voices`` order, in place) of every note
    whose track's pitch bend already carries vibrato (:func:`bend_vibrato_extent` at least
    :data:`BEND_VIBRATO_CENTS`): the file's vibrato is played, not the prior's
    on top of it (two vibratos at once: the prior does not see the bends). A vibrato the caller fixed stays."""
    from mididdsp.synthesis.settings import EXPRESSION_INPUTS

    column = EXPRESSION_INPUTS.index("vibrato")
    frames = int(math.ceil(max((n.end for _, _, notes in voices for n in notes), default=0.0) * FRAME_RATE)) + 2
    bends: dict[int, Any] = {}
    for row, (t, _, notes) in enumerate(voices):
        if not score.tracks[t].pitch_bends:
            continue
        if t not in bends:
            bends[t] = score.tracks[t].control_frames(frames)["pitch_bend"]
        for i, extent in enumerate(bend_vibrato_extent(bends[t], notes)):
            if extent >= BEND_VIBRATO_CENTS and not (fixed_mask is not None and bool(fixed_mask[row, i, column])):
                sampled[row, i, column] = 0.0


def bend_vibrato_extent(bend_semitones, notes):
    """The vibrato a MIDI file's pitch bend already carries inside each note of one voice, as ``mididdsp
    extract`` measures it in an f0 (:func:`mididdsp.expression.vibrato.vibrato`: cents, at 3-9 Hz, gated; a bend
    ramp or a held bend is a trend, not vibrato), through its numpy twin
    (:func:`mididdsp.expression.vibrato_numpy.note_vibrato_extent`), so that the render never imports torch.

    Args:
        bend_semitones: [T] float pitch bend of the voice's track at 250 Hz frames (``Track.control_frames``).
        notes: the voice's notes (``.start``, ``.end`` in seconds), in order, not overlapping.
    Returns:
        [N] float64 extents in cents (0 for notes whose bend does not move).
    """
    import numpy as np

    bend = np.asarray(bend_semitones, np.float64)
    extent = np.zeros(len(notes))
    spans = [(int(round(n.start * FRAME_RATE)), min(len(bend), int(round(n.end * FRAME_RATE)))) for n in notes]
    moving = [i for i, (first, stop) in enumerate(spans) if stop - first > 1 and np.ptp(bend[first:stop]) > 0.01]
    if not moving:  # most files: no bend inside any note, nothing to measure
        return extent
    note_index = np.full(len(bend), -1, np.int64)
    for number, i in enumerate(moving):
        first, stop = spans[i]
        note_index[first:stop] = number
    from mididdsp.expression.vibrato_numpy import note_vibrato_extent

    extent[moving] = note_vibrato_extent(100.0 * bend, note_index, len(moving))
    return extent
