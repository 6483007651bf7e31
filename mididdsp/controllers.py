"""What a MIDI file's own controllers do to a render, beside the note expression: CC7 and CC11 scale the level,
CC1 deepens the vibrato, and a pitch bend that already carries vibrato takes the place of the prior's.

Arrays are numpy, one value per 250 Hz frame (:meth:`mididdsp.score.Track.control_frames`); kept free of torch so
that :mod:`mididdsp.render` can import it at module level.
"""
from __future__ import annotations

import math
from typing import Any

MODULATION_VIBRATO = 0.5    # CC1 at 127 adds this much of the vibrato scale
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
        first, last = int(round(start * 250)), max(int(round(end * 250)), int(round(start * 250)) + 1)
        amount = float(np.mean(cc1[first:last])) / 127.0 if last > first and first < len(cc1) else 0.0
        if amount > 0:
            controls[i, 3] = min(1.0, controls[i, 3] + MODULATION_VIBRATO * amount)
            if controls[i, 6] < 1.0:
                controls[i, 6] = DEFAULT_VIBRATO_RATE_HZ
    return controls


def leave_vibrato_to_bends(score, voices: list, sampled, fixed_mask=None) -> None:
    """Zero the sampled vibrato (``sampled`` [voices, notes, 7], rows in ``voices`` order, in place) of every note
    whose track's pitch bend already carries vibrato (:func:`~mididdsp.expression.vibrato.bend_vibrato_extent` at
    least :data:`~mididdsp.expression.vibrato.BEND_VIBRATO_CENTS`): the file's vibrato is played, not the prior's
    on top of it (two vibratos at once: the prior does not see the bends). A vibrato the caller fixed stays."""
    from mididdsp.expression.vibrato import BEND_VIBRATO_CENTS, bend_vibrato_extent
    from mididdsp.synthesis.generator import EXPRESSION_INPUTS

    column = EXPRESSION_INPUTS.index("vibrato")
    frames = int(math.ceil(max((n.end for _, _, notes in voices for n in notes), default=0.0) * 250)) + 2
    bends: dict[int, Any] = {}
    for row, (t, _, notes) in enumerate(voices):
        if not score.tracks[t].pitch_bends:
            continue
        if t not in bends:
            bends[t] = score.tracks[t].control_frames(frames)["pitch_bend"]
        for i, extent in enumerate(bend_vibrato_extent(bends[t], notes)):
            if extent >= BEND_VIBRATO_CENTS and not (fixed_mask is not None and bool(fixed_mask[row, i, column])):
                sampled[row, i, column] = 0.0
