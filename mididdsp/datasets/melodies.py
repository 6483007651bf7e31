"""Monophonic melodies for the SoundFont training corpus.

Three sources, all offline and deterministic for a seed:

* ``bach``: the 371 Bach chorales of the music21 corpus; each of the four voices (soprano, alto, tenor, bass)
  is one melody. Fermatas mark phrase ends.
* ``mammoth``: ``ryansMammoth``, about 1000 monophonic fiddle tunes (abc) of the music21 corpus.
* ``generated``: a seeded random melody generator (a random walk on a scale with phrase structure and rests).

Only these two music21 folders may be used for training: the rest of the music21 corpus is reserved for
evaluation. music21 is imported lazily and scores are parsed only when drawn (about 0.05-0.1 s each).

A :class:`Melody` is a list of ``(start_s, end_s, pitch)`` notes at a tempo, plus the indices of the notes that
start a phrase. :func:`transpose_to_range` moves a melody by octaves into an instrument's range
(:data:`INSTRUMENT_RANGES`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MELODY_SOURCES = ("bach", "mammoth", "generated")

# Comfortable sounding ranges as (lowest, highest) MIDI pitch: a melody is moved by octaves into them, and the
# few notes still outside are folded in by octaves. Narrower than the instruments' full compass on purpose.
INSTRUMENT_RANGES: dict[str, tuple[int, int]] = {
    "violin": (55, 88),      # G3-E6
    "viola": (48, 81),       # C3-A5
    "cello": (36, 69),       # C2-A4
    "contrabass": (28, 55),  # E1-G3 (sounding)
    "flute": (60, 96),       # C4-C7
    "oboe": (58, 88),        # Bb3-E6
    "clarinet": (50, 86),    # D3-D6 (sounding)
    "bassoon": (34, 70),     # Bb1-Bb4
    "saxophone": (49, 80),   # alto sax, Db3-Ab5 (sounding)
    "trumpet": (52, 84),     # E3-C6
    "horn": (41, 77),        # F2-F5 (sounding)
    "trombone": (40, 72),    # E2-C5
    "tuba": (29, 60),        # F1-C4
}

_GENERATED_TEMPO_QPM = (60.0, 120.0)
_FERMATA_STRETCH = 1.6   # a chorale fermata lengthens its note by this factor
_PHRASE_QUARTERS = 8.0   # fiddle tunes: a new phrase every 8 quarter notes (2 bars of 4/4) when no rest breaks it


@dataclass(frozen=True)
class Melody:
    """A monophonic melody.

    notes: ``(start_s, end_s, pitch)`` sorted by start, not overlapping (times in seconds, pitch a MIDI number).
    phrase_starts: indices into ``notes`` of the notes that begin a phrase (always starts with 0).
    """

    source: str
    melody_id: str
    tempo_qpm: float
    notes: tuple[tuple[float, float, int], ...]
    phrase_starts: tuple[int, ...]

    @property
    def duration(self) -> float:
        """End of the last note in seconds."""
        return self.notes[-1][1] if self.notes else 0.0

    def phrases(self) -> list[tuple[int, int]]:
        """``(first, stop)`` note index ranges of the phrases (``stop`` exclusive)."""
        bounds = list(self.phrase_starts) + [len(self.notes)]
        return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i]]

    def excerpt(self, first: int, stop: int) -> "Melody":
        """Notes ``first:stop``, shifted to start at 0 s, with their phrase starts."""
        notes = self.notes[first:stop]
        t0 = notes[0][0]
        shifted = tuple((round(s - t0, 6), round(e - t0, 6), p) for s, e, p in notes)
        starts = tuple(sorted({0} | {i - first for i in self.phrase_starts if first <= i < stop}))
        return dataclasses.replace(self, notes=shifted, phrase_starts=starts)


# ---------------------------------------------------------------------------------------------- music21 sources
def bach_chorale_names() -> list[str]:
    """The 371 chorale corpus names (``'bach/bwv269'``, ...) in Riemenschneider order. Cheap: nothing parsed."""
    from music21 import corpus

    return list(corpus.chorales.Iterator(returnType="filename"))


def mammoth_paths() -> list[Path]:
    """Paths of the ``ryansMammoth`` fiddle tunes (abc), sorted by file name. Cheap: nothing parsed."""
    from music21 import corpus

    return sorted((Path(p) for p in corpus.getComposer("ryansMammoth")), key=lambda p: p.name)


def _part_notes(part, tempo_qpm: float, phrase_quarters: float | None) -> tuple[list, list[int]]:
    """Notes and phrase starts of one music21 part (ties merged, grace notes and chord symbols dropped).

    Chords keep their highest pitch. A phrase starts after a rest, after a fermata, and (when ``phrase_quarters``
    is set) at the first note crossing a multiple of ``phrase_quarters``. Fermata notes are lengthened.
    """
    from music21 import expressions, harmony

    seconds_per_quarter = 60.0 / tempo_qpm
    notes: list[tuple[float, float, int]] = []
    starts: list[int] = []
    new_phrase, shift_s, last_block = True, 0.0, None
    for element in part.stripTies().flatten().notesAndRests:
        if isinstance(element, harmony.Harmony) or element.duration.isGrace or element.quarterLength <= 0:
            continue
        if element.isRest:
            new_phrase = True
            continue
        offset_q = float(element.offset)
        block = int(offset_q // phrase_quarters) if phrase_quarters else None
        if phrase_quarters and block != last_block:
            new_phrase = True
        last_block = block
        pitch = max(p.midi for p in element.pitches) if element.isChord else element.pitch.midi
        start = offset_q * seconds_per_quarter + shift_s
        length = float(element.quarterLength) * seconds_per_quarter
        fermata = any(isinstance(e, expressions.Fermata) for e in element.expressions)
        if fermata:
            shift_s += length * (_FERMATA_STRETCH - 1.0)
            length *= _FERMATA_STRETCH
        if notes and start < notes[-1][1] - 1e-6:  # overlapping voice (rare in these sources): keep it monophonic
            continue
        if new_phrase:
            starts.append(len(notes))
            new_phrase = False
        notes.append((round(start, 6), round(start + length, 6), int(pitch)))
        new_phrase = new_phrase or fermata
    return notes, starts


def chorale_voices(name: str, tempo_qpm: float = 70.0) -> list[Melody]:
    """The four voices of one Bach chorale (``name`` from :func:`bach_chorale_names`) as melodies."""
    from music21 import corpus

    score = corpus.parse(name)
    melodies = []
    for part in list(score.parts)[:4]:
        notes, starts = _part_notes(part, tempo_qpm, phrase_quarters=None)
        if notes:
            melodies.append(Melody("bach", f"{name}:{part.partName or part.id}", tempo_qpm, tuple(notes),
                                   tuple(starts)))
    return melodies


def mammoth_tune(path: str | Path, median_note_s: float = 0.35) -> Melody:
    """One ``ryansMammoth`` fiddle tune (its first tune if the file holds several) as a melody.

    The tunes are written in quavers or semiquavers and carry no tempo: the tempo is chosen so that the median
    note lasts ``median_note_s`` seconds (kept within 40-140 quarter notes per minute).
    """
    from music21 import corpus, stream

    score = corpus.parse(str(path))
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    part = score.parts[0] if score.parts else score
    notes_q, starts = _part_notes(part, 60.0, phrase_quarters=_PHRASE_QUARTERS)  # at 60 qpm, seconds = quarters
    median_q = float(np.median([e - s for s, e, _ in notes_q])) if notes_q else 0.5
    tempo = float(np.clip(60.0 * median_q / median_note_s, 40.0, 140.0))
    scale = 60.0 / tempo
    notes = tuple((round(s * scale, 6), round(e * scale, 6), p) for s, e, p in notes_q)
    return Melody("mammoth", f"ryansMammoth/{Path(path).name}", tempo, notes, tuple(starts))


# ------------------------------------------------------------------------------------------- generated melodies
_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
}
# Rhythm cells filling two beats (quarter-note units), drawn with the given weights.
_CELLS = ((1.0, 1.0), (0.5, 0.5, 1.0), (1.5, 0.5), (2.0,), (0.5, 0.5, 0.5, 0.5), (1.0, 0.5, 0.5), (0.75, 0.25, 1.0))
_CELL_WEIGHTS = (0.25, 0.15, 0.15, 0.15, 0.1, 0.12, 0.08)
# Scale-degree steps of the random walk and their probabilities.
_STEPS = (-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5)
_STEP_WEIGHTS = (0.01, 0.02, 0.04, 0.11, 0.3, 0.04, 0.3, 0.11, 0.04, 0.02, 0.01)


def generate_melody(rng: np.random.Generator, melody_id: str = "generated", n_phrases: int | None = None) -> Melody:
    """A random melody: a scale-degree random walk in phrases of 2-4 bars of 4/4 around middle C.

    Each phrase ends on a long tonic or dominant note, usually followed by a rest; the walk stays within about
    an octave and a half and leaps are rare. Rests inside phrases are rare. Deterministic for the ``rng`` state.
    """
    tempo = float(rng.uniform(*_GENERATED_TEMPO_QPM))
    spq = 60.0 / tempo
    scale = _SCALES[str(rng.choice(list(_SCALES)))]
    tonic = 60 + int(rng.integers(-6, 6))
    n_phrases = int(rng.integers(2, 5)) if n_phrases is None else n_phrases
    degree, t_q = 0, 0.0
    notes: list[tuple[float, float, int]] = []
    starts: list[int] = []
    for _ in range(n_phrases):
        starts.append(len(notes))
        beats = 4 * int(rng.integers(2, 5))
        final_q = float(rng.choice([2.0, 4.0]))  # the phrase's last, long note
        cells: list[float] = []
        while sum(cells) < beats - final_q:
            cells.extend(_CELLS[rng.choice(len(_CELLS), p=_CELL_WEIGHTS)])
        for i, length_q in enumerate(cells + [final_q]):
            last = i == len(cells)
            if not last and i > 0 and rng.random() < 0.04:  # an occasional rest inside a phrase
                t_q += length_q
                continue
            if last:  # cadence: the tonic or dominant nearest to where the walk is
                degree = min((-7, -3, 0, 4, 7), key=lambda d: (abs(d - degree), rng.random()))
            elif i > 0:
                degree = int(np.clip(degree + rng.choice(_STEPS, p=_STEP_WEIGHTS), -7, 10))
            octave, index = divmod(degree, len(scale))
            pitch = tonic + 12 * octave + scale[index]
            notes.append((round(t_q * spq, 6), round((t_q + length_q) * spq, 6), int(pitch)))
            t_q += length_q
        t_q += float(rng.choice([0.0, 1.0, 2.0], p=[0.2, 0.5, 0.3]))  # breath between phrases
    return Melody("generated", melody_id, tempo, tuple(notes), tuple(starts))


# ---------------------------------------------------------------------------------------------------- ranges
def transpose_to_range(melody: Melody, low: int, high: int, rng: np.random.Generator | None = None) -> Melody:
    """Move ``melody`` by whole octaves into ``[low, high]`` (MIDI pitches, inclusive).

    The octave shift with the fewest notes outside the range is used (``rng`` picks among equally good shifts,
    otherwise the one closest to the range centre); notes still outside are folded in by octaves.
    """
    if high - low < 11:
        raise ValueError(f"pitch range [{low}, {high}] is narrower than an octave")
    pitches = np.array([p for _, _, p in melody.notes])
    if pitches.size == 0:
        return melody
    shifts = list(range(-8, 9))
    outside = [int(np.sum((pitches + 12 * k < low) | (pitches + 12 * k > high))) for k in shifts]
    best = [k for k, n in zip(shifts, outside) if n == min(outside)]
    centre = (low + high) / 2.0
    if rng is not None and len(best) > 1:
        shift = int(rng.choice(best))
    else:
        shift = min(best, key=lambda k: abs(np.median(pitches) + 12 * k - centre))

    def fold(pitch: int) -> int:
        pitch += 12 * shift
        while pitch < low:
            pitch += 12
        while pitch > high:
            pitch -= 12
        return pitch

    return dataclasses.replace(melody, notes=tuple((s, e, fold(p)) for s, e, p in melody.notes))


# ----------------------------------------------------------------------------------------------- drawing
def draw_melody(sources: list[str] | tuple[str, ...], rng: np.random.Generator, melody_id: str) -> Melody:
    """One melody from a source drawn uniformly from ``sources`` (:data:`MELODY_SOURCES`); a piece, voice and
    tempo drawn from ``rng``. Only the drawn score is parsed. ``melody_id`` names a generated melody."""
    source = str(sources[int(rng.integers(len(sources)))])
    if source == "bach":
        names = _cached_names("bach")
        name = names[int(rng.integers(len(names)))]
        voice, tempo = int(rng.integers(4)), float(rng.uniform(56.0, 84.0))
        voices = chorale_voices(name, round(tempo, 3))
        return voices[voice % len(voices)]
    if source == "mammoth":
        paths = _cached_names("mammoth")
        return mammoth_tune(paths[int(rng.integers(len(paths)))], median_note_s=float(rng.uniform(0.25, 0.5)))
    if source == "generated":
        return generate_melody(rng, melody_id)
    raise ValueError(f"unknown melody source {source!r}; expected some of {', '.join(MELODY_SOURCES)}")


_NAME_CACHE: dict[str, list] = {}


def _cached_names(source: str) -> list:
    if source not in _NAME_CACHE:
        _NAME_CACHE[source] = bach_chorale_names() if source == "bach" else mammoth_paths()
    return _NAME_CACHE[source]


def concatenate(parts: list[tuple[float, Melody]], melody_id: str = "concatenated") -> Melody:
    """Melodies placed at the given offsets (seconds) into one melody; each part keeps its phrase starts."""
    notes: list[tuple[float, float, int]] = []
    starts: list[int] = []
    for offset, melody in parts:
        starts.extend(len(notes) + i for i in melody.phrase_starts)
        notes.extend((round(s + offset, 6), round(e + offset, 6), p) for s, e, p in melody.notes)
    tempo = parts[0][1].tempo_qpm if parts else 120.0
    return Melody("mixed", melody_id, tempo, tuple(notes), tuple(starts))
