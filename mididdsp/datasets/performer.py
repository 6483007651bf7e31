"""A rule-based performer: a melody in, an expressive monophonic MIDI performance and its ground truth out.

What it plays, per note, and records (:class:`PerformedNote`):

* velocity: a phrase-level dynamic (a base level and an arch, crescendo, decrescendo or flat shape over the
  phrase) plus a small random deviation per note;
* an expression (CC11) curve inside the note, one of ``flat``, ``swell`` (rise to a peak, then fall),
  ``crescendo`` or ``decrescendo``, defined in dB: ``level_db`` at the peak and ``depth_db`` below it at the far
  end(s). CC11 maps to gain by the General MIDI / SoundFont law ``gain_db = 40 log10(value / 127)``
  (:func:`cc11_to_db`). The recorded ``peak_position`` (0..1 in the note) and ``mean_gain_db`` are measured on
  the CC11 values actually written;
* vibrato through pitch bend: ``depth_cents * ramp(t) * sin(2 pi rate (t - start - delay))`` from ``delay``
  seconds after the onset, faded in over :data:`VIBRATO_RAMP_S`; notes shorter than :data:`MIN_VIBRATO_NOTE_S`
  get none. The pitch-bend range is set with RPN 0 to :data:`PITCH_BEND_RANGE_SEMITONES`;
* articulation: ``legato`` notes sound their whole written length, ``detached`` ones a fraction of it.

CC11 and pitch bend are written every :data:`CONTROL_STEP_S` while a note sounds (repeated values left out).
All times are whole milliseconds: the MIDI file uses 480 ticks per beat at 125 bpm, one tick per millisecond,
so the ground truth is exactly what the file encodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mididdsp.datasets.melodies import Melody
from mididdsp.fileio import atomic_path, write_text_atomic

PITCH_BEND_RANGE_SEMITONES = 2
CONTROL_STEP_S = 0.01
VIBRATO_RAMP_S = 0.1
MIN_VIBRATO_NOTE_S = 0.25
CC7_VOLUME = 100
TICKS_PER_BEAT = 480
MIDI_TEMPO_US = 480_000  # 125 bpm: 480 ticks per beat -> one tick per millisecond
CC11_SHAPES = ("flat", "swell", "crescendo", "decrescendo")
CSV_COLUMNS = ("start", "end", "pitch", "velocity", "phrase", "articulation", "length_fraction", "cc11_shape",
               "cc11_level_db", "cc11_depth_db", "peak_position", "mean_gain_db", "vibrato_depth_cents",
               "vibrato_rate_hz", "vibrato_delay_s")


@dataclass(frozen=True)
class PerformanceStyle:
    """Ranges the performer draws from (uniformly) for one instrument."""

    vibrato_probability: float = 0.8
    vibrato_depth_cents: tuple[float, float] = (10.0, 40.0)
    vibrato_rate_hz: tuple[float, float] = (4.5, 7.0)
    vibrato_delay_s: tuple[float, float] = (0.05, 0.35)
    legato_probability: float = 0.6
    detached_fraction: tuple[float, float] = (0.5, 0.85)
    velocity_base: tuple[float, float] = (45.0, 110.0)
    cc11_depth_db: tuple[float, float] = (2.0, 12.0)


STYLES: dict[str, PerformanceStyle] = {
    "violin": PerformanceStyle(0.9, (15.0, 50.0), (5.0, 7.0)),
    "viola": PerformanceStyle(0.9, (15.0, 45.0), (4.8, 6.8)),
    "cello": PerformanceStyle(0.9, (15.0, 45.0), (4.5, 6.5)),
    "contrabass": PerformanceStyle(0.7, (10.0, 35.0), (4.5, 6.0)),
    "flute": PerformanceStyle(0.8, (8.0, 30.0), (4.5, 6.0)),
    "oboe": PerformanceStyle(0.7, (8.0, 25.0), (4.5, 6.0)),
    "saxophone": PerformanceStyle(0.7, (10.0, 35.0), (4.5, 6.0)),
    "trumpet": PerformanceStyle(0.5, (8.0, 25.0), (5.0, 6.5), legato_probability=0.5),
    "trombone": PerformanceStyle(0.4, (8.0, 25.0), (4.5, 6.0)),
    "horn": PerformanceStyle(0.3, (5.0, 15.0), (4.5, 6.0)),
    "tuba": PerformanceStyle(0.3, (5.0, 15.0), (4.0, 5.5)),
    "clarinet": PerformanceStyle(0.2, (5.0, 15.0), (4.5, 6.0)),
    "bassoon": PerformanceStyle(0.4, (5.0, 20.0), (4.5, 6.0)),
}


@dataclass(frozen=True)
class PerformedNote:
    """Ground truth of one played note (times in seconds, gains in dB, see the module docstring)."""

    start: float
    end: float
    pitch: int
    velocity: int
    phrase: int
    articulation: str
    length_fraction: float
    cc11_shape: str
    cc11_level_db: float
    cc11_depth_db: float
    peak_position: float
    mean_gain_db: float
    vibrato_depth_cents: float
    vibrato_rate_hz: float
    vibrato_delay_s: float

    def csv_row(self) -> list[str]:
        """Values in :data:`CSV_COLUMNS` order, as text with fixed precision."""
        return [_fmt(getattr(self, name)) for name in CSV_COLUMNS]


@dataclass(frozen=True)
class Performance:
    """A monophonic performance: notes with ground truth and the dense control streams that realise them.

    cc11: ``(time_s, value 0..127)``; pitch_bends: ``(time_s, value -8192..8191)``; duration: end of the file (s).
    """

    program: int
    notes: tuple[PerformedNote, ...]
    cc11: tuple[tuple[float, int], ...]
    pitch_bends: tuple[tuple[float, int], ...]
    duration: float
    pitch_bend_range: int = PITCH_BEND_RANGE_SEMITONES

    def midi_file(self):
        """The performance as a ``mido.MidiFile`` (one track, channel 0)."""
        import mido

        setup = [mido.Message("program_change", program=self.program),
                 *(mido.Message("control_change", control=c, value=v) for c, v in
                   ((101, 0), (100, 0), (6, self.pitch_bend_range), (38, 0), (101, 127), (100, 127),
                    (7, CC7_VOLUME), (11, 127))),
                 mido.Message("pitchwheel", pitch=0)]
        events: list[tuple[int, int, object]] = [(0, i, m) for i, m in enumerate(setup)]
        # At one tick: note-offs, then controls, then note-ons (a new note starts with its own bend and CC11).
        for time_s, value in self.cc11:
            events.append((_tick(time_s), 100, mido.Message("control_change", control=11, value=value)))
        for time_s, value in self.pitch_bends:
            events.append((_tick(time_s), 100, mido.Message("pitchwheel", pitch=value)))
        for note in self.notes:
            events.append((_tick(note.start), 200, mido.Message("note_on", note=note.pitch, velocity=note.velocity)))
            events.append((_tick(note.end), 50, mido.Message("note_off", note=note.pitch, velocity=0)))
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=MIDI_TEMPO_US)])
        now = 0
        for tick, _, message in events:
            track.append(message.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=max(0, _tick(self.duration) - now)))
        midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
        midi.tracks.append(track)
        return midi

    def write_midi(self, path: str | Path) -> None:
        """Write the MIDI file atomically."""
        with atomic_path(path) as temp:
            self.midi_file().save(temp)

    def write_notes_csv(self, path: str | Path) -> None:
        """Write the per-note ground truth (:data:`CSV_COLUMNS`) atomically."""
        lines = [",".join(CSV_COLUMNS)] + [",".join(note.csv_row()) for note in self.notes]
        write_text_atomic(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------ curves
def cc11_to_db(value: np.ndarray | int) -> np.ndarray:
    """CC11 value (1..127) -> gain in dB, the General MIDI / SoundFont concave law ``40 log10(value / 127)``."""
    return 40.0 * np.log10(np.maximum(np.asarray(value, dtype=np.float64), 1e-3) / 127.0)


def db_to_cc11(gain_db: np.ndarray) -> np.ndarray:
    """Gain in dB (<= 0) -> nearest CC11 value (1..127), the inverse of :func:`cc11_to_db`."""
    return np.clip(np.round(127.0 * 10.0 ** (np.asarray(gain_db) / 40.0)), 1, 127).astype(int)


def cc11_curve_db(shape: str, position: np.ndarray, level_db: float, depth_db: float, peak: float) -> np.ndarray:
    """Expression gain in dB at note positions ``position`` [n] (0..1): ``level_db`` at the peak.

    flat: constant; crescendo: rises linearly (in dB) by ``depth_db`` to the end; decrescendo: falls from the
    start; swell: a raised-cosine rise from ``level_db - depth_db`` to the peak at ``peak`` (0..1), then a fall.
    """
    u = np.clip(np.asarray(position, dtype=np.float64), 0.0, 1.0)
    if shape == "flat":
        rise = np.ones_like(u)
    elif shape == "crescendo":
        rise = u
    elif shape == "decrescendo":
        rise = 1.0 - u
    elif shape == "swell":
        up = 0.5 - 0.5 * np.cos(np.pi * u / peak)
        down = 0.5 + 0.5 * np.cos(np.pi * (u - peak) / (1.0 - peak))
        rise = np.where(u < peak, up, down)
    else:
        raise ValueError(f"unknown CC11 shape {shape!r}; expected one of {CC11_SHAPES}")
    return level_db - depth_db * (1.0 - rise)


def vibrato_cents(time_since_onset: np.ndarray, depth_cents: float, rate_hz: float, delay_s: float) -> np.ndarray:
    """Vibrato pitch offset in cents at ``time_since_onset`` [n] seconds: zero before ``delay_s``, faded in."""
    t = np.asarray(time_since_onset, dtype=np.float64) - delay_s
    ramp = np.clip(t / VIBRATO_RAMP_S, 0.0, 1.0)
    return np.where(t >= 0.0, depth_cents * ramp * np.sin(2.0 * np.pi * rate_hz * t), 0.0)


def cents_to_bend(cents: np.ndarray, bend_range: int = PITCH_BEND_RANGE_SEMITONES) -> np.ndarray:
    """Pitch offset in cents -> 14-bit pitch-bend value (-8192..8191) for a range of ``bend_range`` semitones."""
    return np.clip(np.round(np.asarray(cents) / (100.0 * bend_range) * 8192.0), -8192, 8191).astype(int)


def bend_to_cents(value: np.ndarray, bend_range: int = PITCH_BEND_RANGE_SEMITONES) -> np.ndarray:
    """14-bit pitch-bend value -> pitch offset in cents, the inverse of :func:`cents_to_bend`."""
    return np.asarray(value, dtype=np.float64) / 8192.0 * 100.0 * bend_range


# ------------------------------------------------------------------------------------------------ performer
def perform(melody: Melody, program: int, style: PerformanceStyle, rng: np.random.Generator,
            tail_s: float = 1.0) -> Performance:
    """Play ``melody`` (GM ``program`` 0..127) expressively; deterministic for the ``rng`` state.

    The file ends ``tail_s`` seconds after the last note so its release is heard.
    """
    notes = melody.notes
    performed: list[PerformedNote] = []
    cc11: list[tuple[float, int]] = []
    bends: list[tuple[float, int]] = []
    for phrase, (first, stop) in enumerate(melody.phrases()):
        base = rng.uniform(*style.velocity_base)
        arc_shape = rng.choice(["arch", "crescendo", "decrescendo", "flat"], p=[0.4, 0.2, 0.2, 0.2])
        arc_amount = rng.uniform(5.0, 25.0)
        legato = rng.random() < style.legato_probability
        for i in range(first, stop):
            start, written_end, pitch = notes[i]
            u = (i - first) / max(1, stop - first - 1)
            arc = {"arch": math.sin(math.pi * u), "crescendo": u, "decrescendo": 1.0 - u, "flat": 0.5}[arc_shape]
            velocity = int(np.clip(round(base + arc_amount * (arc - 0.5) + rng.normal(0.0, 4.0)), 20, 127))
            # Articulation: per phrase, with an occasional note played the other way.
            note_legato = legato != (rng.random() < 0.15)
            fraction = 1.0 if note_legato else float(rng.uniform(*style.detached_fraction))
            start = _ms(start)
            end = _ms(start + max(0.03, (written_end - start) * fraction))
            fraction = round((end - start) / max(written_end - start, 1e-3), 4)
            note, note_cc11, note_bends = _play_note(start, end, pitch, velocity, rng, style)
            performed.append(PerformedNote(start, end, pitch, velocity, phrase,
                                           "legato" if note_legato else "detached", fraction, **note))
            cc11.extend(note_cc11)
            bends.extend(note_bends)
    duration = _ms((performed[-1].end if performed else 0.0) + tail_s)
    return Performance(program, tuple(performed), _dedupe(cc11), _dedupe(bends), duration)


def _play_note(start: float, end: float, pitch: int, velocity: int, rng: np.random.Generator,
               style: PerformanceStyle) -> tuple[dict, list, list]:
    """Expression of one note: its ground-truth fields, and its CC11 and pitch-bend events."""
    length = end - start
    times = start + CONTROL_STEP_S * np.arange(max(1, int(math.ceil(length / CONTROL_STEP_S - 1e-9))))
    times = np.round(times, 3)
    position = (times - start) / length
    shape = str(rng.choice(CC11_SHAPES, p=[0.25, 0.35, 0.2, 0.2]))
    level_db = float(rng.uniform(-4.0, 0.0))
    depth_db = 0.0 if shape == "flat" else float(rng.uniform(*style.cc11_depth_db))
    peak = float(rng.uniform(0.25, 0.75))
    values = db_to_cc11(cc11_curve_db(shape, position, level_db, depth_db, peak))
    peak_position = float(np.mean(position[values == values.max()]))
    mean_gain_db = float(np.mean(cc11_to_db(values)))

    vibrato = rng.random() < style.vibrato_probability
    depth, rate, delay = rng.uniform(*style.vibrato_depth_cents), rng.uniform(*style.vibrato_rate_hz), \
        rng.uniform(*style.vibrato_delay_s)  # drawn always, so one note's choice does not shift the others
    if not vibrato or length < MIN_VIBRATO_NOTE_S:
        depth = rate = delay = 0.0
    else:
        depth, rate, delay = round(float(depth), 2), round(float(rate), 3), _ms(min(delay, 0.4 * length))
    bend_values = cents_to_bend(vibrato_cents(times - start, depth, rate, delay))
    fields = dict(cc11_shape=shape, cc11_level_db=round(level_db, 3), cc11_depth_db=round(depth_db, 3),
                  peak_position=round(peak_position, 4), mean_gain_db=round(mean_gain_db, 4),
                  vibrato_depth_cents=depth, vibrato_rate_hz=rate, vibrato_delay_s=delay)
    return (fields, [(float(t), int(v)) for t, v in zip(times, values)],
            [(float(t), int(v)) for t, v in zip(times, bend_values)])


# ------------------------------------------------------------------------------------------------ helpers
def _ms(seconds: float) -> float:
    """Round to whole milliseconds (one MIDI tick)."""
    return round(float(seconds), 3)


def _tick(seconds: float) -> int:
    return int(round(seconds * 1000.0))


def _dedupe(events: list[tuple[float, int]]) -> tuple[tuple[float, int], ...]:
    """Drop events that repeat the previous value (MIDI controllers hold their value)."""
    kept: list[tuple[float, int]] = []
    for time_s, value in events:
        if not kept or kept[-1][1] != value:
            kept.append((time_s, value))
    return tuple(kept)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != 0 else "0"
    return str(value)
