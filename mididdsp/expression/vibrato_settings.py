"""The vibrato measure's constants, without torch: :mod:`mididdsp.expression.vibrato` (the extractor's, torch) and
:mod:`mididdsp.expression.vibrato_numpy` (the render's, for a MIDI file's pitch bend) both read them from here, so
the two measures cannot drift apart. Their meaning is in :mod:`mididdsp.expression.vibrato`'s docstring.
"""
from __future__ import annotations

VIBRATO_RATE_RANGE_HZ = (3.0, 9.0)
VIBRATO_MIN_NOTE_S = 0.2
VIBRATO_GATE_RAMPS = (0.5, 0.05, 0.25)  # half-widths of the gate's ramps: rate (Hz), duration (s), cycles
VIBRATO_OUTLIER_CENTS = 90.0  # farther than this from the note's median deviation: a transition or a tracking error
VIBRATO_SETTLE_FRAMES = 10  # frames left out after the last transition frame of a note's head (40 ms)
VIBRATO_TRANSITION_FRAMES = 40  # how far into a note (from either end) an outlier counts as a transition (160 ms)
VIBRATO_SEARCH_HZ = (1.0, 15.0001, 0.05)  # candidate rates: start, stop, step (Hz)
VIBRATO_CHUNK_ELEMENTS = 1 << 18  # note frames per group in the vibrato fit
VIBRATO_EXTENT_QUANTILE = 0.9  # of the one-period window amplitudes
VIBRATO_SKIP_FRAMES = (10, 5)  # frames left out of the vibrato fit after the onset / before the end (40 / 20 ms)
