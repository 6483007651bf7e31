"""MIDI / NoteSequence -> tracks -> monophonic voices -> notes, and notes -> frame-rate note features.

A :class:`Score` is a list of :class:`Track` s; a track is one (MIDI track, channel, GM program) with its notes
(times in seconds), pitch bends in semitones and the CC 1/7/11 controls. :func:`split_voices` splits a
track's notes into monophonic voices without moving any onset, and :func:`note_frames` turns one voice into
per-frame arrays at the project frame rate (centred frames: frame ``i`` is the instant ``i / frame_rate`` s).

Reading uses mido, the parser pretty_midi is built on, with our own note pairing because pretty_midi's reader
lets one note-off close every open note of that pitch: a repeated note whose note-on comes before the previous
note-off (legato re-strike, common in played MIDI) would be cut to a sliver. Here note-ons and note-offs of
one pitch pair first-in first-out, and the repairs below make the result clean. Writing also uses mido, so
RPN sequences keep their order (pretty_midi's writer sorts controllers by number). General MIDI names come
from pretty_midi; note_seq is imported only inside the NoteSequence conversions (it is heavy).

Repairs made while reading (each listed in ``Score.repairs`` and summarised in one :class:`MidiRepairWarning`):
  * a note with end <= start is dropped;
  * two notes of the same pitch on one track that overlap: the earlier note ends where the later one starts
    (two with the same start are merged into one, keeping the later end);
  * a note still sounding at the end of its MIDI track ends with the track.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import io
import math
import os
import warnings
from typing import Any, Iterable, Sequence

import mido
import numpy as np
import pretty_midi

from mididdsp.dsp.constants import FRAME_RATE
from mididdsp.errors import InputFileError, MididdspError
from mididdsp.fileio import atomic_open

CONTROLS = (1, 7, 11)  # modulation, channel volume, expression: the CCs kept per track
CONTROL_DEFAULTS = {1: 0.0, 7: 100.0, 11: 127.0}  # General MIDI power-on values, used before a track's first CC
DEFAULT_BEND_RANGE = 2.0  # semitones for a full bend when the file sets no RPN 0 (General MIDI default)
LEGATO_TOLERANCE_S = 0.010  # overlaps shorter than this inside one voice are legato: trimmed, not split
DRUM_CHANNEL = 9
MAX_DURATION_S = 4 * 3600.0  # a later note means a corrupt file, not music
_WRITE_PPQ, _WRITE_TEMPO = 8000, 500_000  # 120 bpm at 8000 ticks per beat: one tick = 1/16000 s (one sample)


class MidiRepairWarning(UserWarning):
    """A MIDI file needed repairs (zero-length notes, same-pitch overlaps, unterminated notes) to be read."""


@dataclasses.dataclass(frozen=True)
class Note:
    """One note: ``start`` and ``end`` in seconds, MIDI ``pitch`` 0..127, ``velocity`` 1..127."""

    start: float
    end: float
    pitch: int
    velocity: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclasses.dataclass
class Track:
    """One instrument part: a MIDI track's notes on one channel with one GM program.

    ``pitch_bends``: ``[(time_s, semitones)]`` in time order; ``controls``: ``{cc: [(time_s, value 0..127)]}``
    for CC 1, 7 and 11 (only those present). Bends and controls apply to every note of the track.
    """

    name: str
    program: int
    is_drum: bool
    notes: list[Note]
    pitch_bends: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    controls: dict[int, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)

    def voices(self) -> list[list[Note]]:
        """The track's notes split into monophonic voices (see :func:`split_voices`)."""
        return split_voices(self.notes)

    def control_frames(self, n_frames: int, frame_rate: float = FRAME_RATE) -> dict[str, np.ndarray]:
        """Pitch bend and CC 1/7/11 sampled at centred frames (frame ``i`` is time ``i / frame_rate``).

        Returns float32 arrays [n_frames]: ``"pitch_bend"`` in semitones (0 before the first bend) and
        ``"cc1"``, ``"cc7"``, ``"cc11"`` in 0..127 (General MIDI defaults 0, 100, 127 before the first event).
        Each value holds until the next event (MIDI controllers are steps).
        """
        times = np.arange(n_frames) / frame_rate
        out = {"pitch_bend": _sample_steps(self.pitch_bends, times, 0.0)}
        for cc in CONTROLS:
            out[f"cc{cc}"] = _sample_steps(self.controls.get(cc, []), times, CONTROL_DEFAULTS[cc])
        return out


@dataclasses.dataclass(frozen=True)
class Voice:
    """One monophonic line of a track: ``notes`` never overlap (see :func:`split_voices`)."""

    track_index: int
    voice_index: int
    track: Track
    notes: list[Note]


@dataclasses.dataclass
class Score:
    """A piece: its tracks, its ``duration`` in seconds (end of the last note), and the repairs made to read it."""

    tracks: list[Track]
    duration: float
    repairs: list[str] = dataclasses.field(default_factory=list)

    def voices(self) -> list[Voice]:
        """Every track's monophonic voices, in track order then voice order."""
        return [Voice(ti, vi, track, notes) for ti, track in enumerate(self.tracks)
                for vi, notes in enumerate(split_voices(track.notes))]

    def transposed(self, semitones: int) -> Score:
        """A copy with every pitched note moved by ``semitones`` (drum tracks unchanged)."""
        tracks = []
        for track in self.tracks:
            notes = track.notes if track.is_drum else [
                dataclasses.replace(n, pitch=n.pitch + semitones) for n in track.notes]
            if any(not 0 <= n.pitch <= 127 for n in notes):
                raise MididdspError(f"transpose {semitones:+d}: a note of track {track.name!r} leaves MIDI range 0..127")
            tracks.append(dataclasses.replace(track, notes=notes))
        return Score(tracks, self.duration, list(self.repairs))

    def stretched(self, factor: float) -> Score:
        """A copy with every time multiplied by ``factor`` (2.0 plays at half speed)."""
        if not factor > 0:
            raise MididdspError(f"time stretch factor {factor}: expected a positive number")
        tracks = [dataclasses.replace(
            t, notes=[dataclasses.replace(n, start=n.start * factor, end=n.end * factor) for n in t.notes],
            pitch_bends=[(s * factor, v) for s, v in t.pitch_bends],
            controls={cc: [(s * factor, v) for s, v in ev] for cc, ev in t.controls.items()}) for t in self.tracks]
        return Score(tracks, self.duration * factor, list(self.repairs))

    def write_midi(self, path: str | os.PathLike) -> None:
        """Write a type-1 MIDI file atomically: 120 bpm at 8000 ticks per beat, so times keep 1/16000 s.

        Each track gets its own MIDI track and channel (drums on channel 10); bends beyond +-2 semitones
        write an RPN 0 bend range first.
        """
        mid = mido.MidiFile(type=1, ticks_per_beat=_WRITE_PPQ)
        mid.tracks.append(mido.MidiTrack([
            mido.MetaMessage("set_tempo", tempo=_WRITE_TEMPO, time=0),
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
            mido.MetaMessage("end_of_track", time=0)]))
        melodic = [c for c in range(16) if c != DRUM_CHANNEL]
        n_melodic = sum(not t.is_drum for t in self.tracks)
        if n_melodic > len(melodic):
            warnings.warn(f"{n_melodic} pitched tracks share 15 MIDI channels: some channels carry two tracks",
                          MidiRepairWarning, stacklevel=2)
        next_melodic = 0
        for track in self.tracks:
            if track.is_drum:
                channel = DRUM_CHANNEL
            else:
                channel, next_melodic = melodic[next_melodic % len(melodic)], next_melodic + 1
            mid.tracks.append(_track_to_mido(track, channel))
        _atomic_save(mid, os.fspath(path))

    def to_note_sequence(self) -> Any:
        """This score as a ``note_seq`` NoteSequence (instrument = track index; bends as raw 14-bit values)."""
        from note_seq.protobuf import music_pb2  # heavy: only when asked for

        ns = music_pb2.NoteSequence(ticks_per_quarter=220, total_time=self.duration)
        ns.tempos.add(time=0.0, qpm=120.0)
        for index, track in enumerate(self.tracks):
            ns.instrument_infos.add(instrument=index, name=track.name)
            common = dict(instrument=index, program=track.program, is_drum=track.is_drum)
            for n in track.notes:
                ns.notes.add(start_time=n.start, end_time=n.end, pitch=n.pitch, velocity=n.velocity, **common)
            bend_range = _bend_range_for(track.pitch_bends)
            for cc, value in _rpn_bend_range(bend_range):
                ns.control_changes.add(time=0.0, control_number=cc, control_value=value, **common)
            for time, semitones in track.pitch_bends:
                ns.pitch_bends.add(time=time, bend=_bend_to_raw(semitones, bend_range), **common)
            for cc, events in sorted(track.controls.items()):
                for time, value in events:
                    ns.control_changes.add(time=time, control_number=cc, control_value=int(round(value)), **common)
        return ns

    @classmethod
    def from_note_sequence(cls, ns: Any, source: str = "NoteSequence") -> Score:
        """A score from a ``note_seq`` NoteSequence: one track per (instrument, program, is_drum).

        Bends and controls of an instrument apply to all its tracks; the bend range comes from RPN 0 control
        changes when present. The same repairs as :func:`read_midi` are made and reported.
        """
        names = {info.instrument: info.name for info in ns.instrument_infos}
        parts: dict[tuple[int, int, bool], list[tuple[float, float, int, int]]] = {}
        for n in ns.notes:
            parts.setdefault((n.instrument, n.program, bool(n.is_drum)), []).append(
                (n.start_time, n.end_time, n.pitch, n.velocity))
        bends: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
        for b in ns.pitch_bends:
            bends[b.instrument].append((b.time, b.bend))
        ccs: dict[int, list[tuple[float, int, int]]] = collections.defaultdict(list)
        for c in sorted(ns.control_changes, key=lambda c: c.time):  # stable: RPN order survives
            ccs[c.instrument].append((c.time, c.control_number, c.control_value))
        raw = [(names.get(inst, ""), program, is_drum, notes, *_channel_events(bends[inst], ccs[inst]))
               for (inst, program, is_drum), notes in parts.items()]
        return _build_score(raw, source)


def read_midi(path: str | os.PathLike, data: bytes | None = None) -> Score:
    """Read a standard MIDI file (type 0 or 1, any tempo map, PPQ or SMPTE timing) into a :class:`Score`.

    One track per (MIDI track, channel, program), ordered by MIDI track, then channel, then first onset; parts
    without notes are left out. Repairs
    (see module docstring) are listed in ``Score.repairs`` and warned once. Raises :class:`InputFileError`
    naming the file if it is missing, not MIDI, truncated, corrupt or has no notes. ``data``: the file's bytes,
    already read (a batch worker on another machine); ``path`` then only names it in messages.
    """
    path = os.fspath(path)
    if data is None and not os.path.isfile(path):
        raise InputFileError(f"{path}: no such MIDI file")
    try:
        mid = mido.MidiFile(path) if data is None else mido.MidiFile(file=io.BytesIO(data))
    except Exception as exc:  # mido raises OSError, EOFError, ValueError, KeyError... for bad bytes
        reason = ("it ends early, truncated" if isinstance(exc, EOFError) else
                  str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise InputFileError(f"{path}: not a readable MIDI file ({reason})") from None
    if mid.type == 2:
        raise InputFileError(f"{path}: type 2 MIDI (independent sequences) is not supported; expected type 0 or 1")
    if mid.ticks_per_beat == 0 or (mid.ticks_per_beat & 0x8000 and not mid.ticks_per_beat & 0xFF):
        raise InputFileError(f"{path}: MIDI header has a time division of 0 ticks")
    seconds = _tempo_map(mid)
    raw: list[tuple] = []
    repairs: list[str] = []
    for track_index, track in enumerate(mid.tracks):
        raw.extend(_parse_track(track, track_index, seconds, repairs))
    return _build_score(raw, path, repairs)


def score_from_notes(notes: Iterable[Note | tuple[float, float, int, int]], program: int = 40,
                     name: str = "", is_drum: bool = False) -> Score:
    """A one-track score from ``(start_s, end_s, pitch, velocity)`` tuples or :class:`Note` s (default: violin).

    Values are checked (times >= 0, pitch 0..127, velocity 1..127); overlaps are repaired as in :func:`read_midi`.
    """
    checked = []
    for note in notes:
        start, end, pitch, velocity = (dataclasses.astuple(note) if isinstance(note, Note) else note)
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start) or not (
                0 <= pitch <= 127 and 1 <= velocity <= 127):
            raise MididdspError(f"note {(start, end, pitch, velocity)}: expected start >= 0, pitch 0..127, "
                                f"velocity 1..127")
        checked.append((float(start), float(end), int(pitch), int(velocity)))
    if not 0 <= program <= 127:
        raise MididdspError(f"program {program}: expected a General MIDI program 0..127")
    return _build_score([(name, program, is_drum, checked, [], {})], "score_from_notes", allow_empty=True)


def split_voices(notes: Sequence[Note], legato_tolerance: float = LEGATO_TOLERANCE_S) -> list[list[Note]]:
    """Split notes (chords, double stops, overlaps) into monophonic voices without moving any onset.

    Rule: notes are taken by start time, higher pitch first among equal starts; each goes to the
    lowest-numbered voice whose last note has ended by its start, else a new voice. So the top note of a chord
    lands in the lowest free voice (voice 0 when it is free). A voice whose last note still sounds for less
    than ``legato_tolerance`` seconds (and started earlier) counts as free: that note is trimmed to end where
    the new one starts (legato). Notes with end <= start are dropped. Each voice is in time order.
    """
    voices: list[list[Note]] = []
    for note in sorted((n for n in notes if n.end > n.start), key=lambda n: (n.start, -n.pitch, n.end)):
        for voice in voices:
            last = voice[-1]
            overlap = last.end - note.start
            if overlap <= 0:
                voice.append(note)
                break
            if overlap < legato_tolerance and last.start < note.start:
                voice[-1] = dataclasses.replace(last, end=note.start)
                voice.append(note)
                break
        else:
            voices.append([note])
    return voices


def note_frames(notes: Sequence[Note], n_frames: int, frame_rate: float = FRAME_RATE) -> dict[str, np.ndarray]:
    """Per-frame note features of one monophonic voice, at centred frames (frame ``i`` is time ``i / frame_rate``).

    A note covers frames ``round(start * frame_rate)`` up to ``round(end * frame_rate) - 1`` (half-up rounding,
    at least one frame): the frames whose instants lie in the note once its edges snap to the nearest frame.
    Where a note overlaps the next by less than :data:`LEGATO_TOLERANCE_S`, the next note takes over at its
    onset frame; a larger overlap raises ``ValueError`` (split the notes with :func:`split_voices` first).

    Returns arrays [n_frames]: ``"pitch"`` float32 MIDI pitch (0 in rests); ``"onset"`` / ``"offset"`` float32
    1.0 at a note's first / last frame (both on a one-frame note; no offset if the note runs past the end);
    ``"note_index"`` int64 index into ``notes`` (-1 in rests); ``"position"`` float32 fraction of the note's
    frames elapsed, ``(i - first) / n_note_frames`` in [0, 1) (0 in rests); ``"velocity"`` float32 (0 in rests).
    """
    out = {"pitch": np.zeros(n_frames, np.float32), "onset": np.zeros(n_frames, np.float32),
           "offset": np.zeros(n_frames, np.float32), "note_index": np.full(n_frames, -1, np.int64),
           "position": np.zeros(n_frames, np.float32), "velocity": np.zeros(n_frames, np.float32)}
    order = sorted((i for i, n in enumerate(notes) if n.end > n.start), key=lambda i: (notes[i].start, notes[i].end))
    spans = []
    for i in order:
        first = math.floor(notes[i].start * frame_rate + 0.5)
        spans.append([i, first, max(math.floor(notes[i].end * frame_rate + 0.5), first + 1)])
    for (i, _, _), (j, first_next, _) in zip(spans, spans[1:]):
        overlap = notes[i].end - notes[j].start
        if overlap >= LEGATO_TOLERANCE_S:
            raise ValueError(f"note_frames: notes {i} and {j} overlap by {overlap:.3f} s; expected one monophonic "
                             f"voice (use split_voices)")
    for k, (i, first, end) in enumerate(spans):
        note = notes[i]
        stop = min(end, spans[k + 1][1]) if k + 1 < len(spans) else end  # the next note takes over at its onset
        lo, hi = max(first, 0), min(stop, n_frames)
        if lo >= hi:
            continue  # sub-frame note hidden by the next onset, or outside the frames
        frames = np.arange(lo, hi)
        out["pitch"][lo:hi] = note.pitch
        out["note_index"][lo:hi] = i
        out["position"][lo:hi] = (frames - first) / (end - first)
        out["velocity"][lo:hi] = note.velocity
        if first >= 0 and first < n_frames:
            out["onset"][first] = 1.0
        if stop <= n_frames:
            out["offset"][stop - 1] = 1.0
    return out


def gm_program_name(program: int) -> str:
    """General MIDI name of a program 0..127, e.g. ``gm_program_name(40) == 'Violin'``."""
    if not 0 <= program <= 127:
        raise MididdspError(f"program {program}: expected a General MIDI program 0..127")
    return pretty_midi.program_to_instrument_name(program)


def gm_program_family(program: int) -> str:
    """General MIDI family of a program 0..127, e.g. ``gm_program_family(40) == 'Strings'``."""
    if not 0 <= program <= 127:
        raise MididdspError(f"program {program}: expected a General MIDI program 0..127")
    return pretty_midi.program_to_instrument_class(program)


def gm_program_number(name: str) -> int:
    """General MIDI program of an instrument name (case and punctuation ignored), e.g. ``'violin'`` -> 40."""
    try:
        return pretty_midi.instrument_name_to_program(name)
    except ValueError:
        raise MididdspError(f"instrument {name!r}: not a General MIDI instrument name (e.g. 'Violin', 'Flute')") from None


# ---------------------------------------------------------------------------------------------- internals


def _sample_steps(events: Sequence[tuple[float, float]], times: np.ndarray, default: float) -> np.ndarray:
    """Step-hold ``[(time_s, value)]`` events at ``times`` [n] -> float32 [n]; ``default`` before the first."""
    if not events:
        return np.full(len(times), default, np.float32)
    event_times = np.array([t for t, _ in events])
    values = np.concatenate([[default], [v for _, v in events]]).astype(np.float32)
    return values[np.searchsorted(event_times, times + 1e-9, side="right")]  # 1e-9: an event on a frame counts


def _tempo_map(mid: mido.MidiFile):
    """A function tick -> seconds for this file (tempo changes from every track, as players do)."""
    division = mid.ticks_per_beat & 0xFFFF  # mido reads the header as a signed short
    if division & 0x8000:  # SMPTE timing: negative frames per second in the high byte, ticks per frame below
        fps = 256 - (division >> 8)
        fps = 29.97 if fps == 29 else float(fps)
        tick_s = 1.0 / (fps * (division & 0xFF))
        return lambda tick: tick * tick_s
    changes = []
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                changes.append((tick, msg.tempo))
    changes.sort(key=lambda c: c[0])  # stable: the later event at one tick wins below
    ticks, starts, scales = [0], [0.0], [500_000 / 1e6 / division]  # 120 bpm until the first tempo event
    for tick, tempo in changes:
        if tick == ticks[-1]:
            scales[-1] = tempo / 1e6 / division
            continue
        starts.append(starts[-1] + (tick - ticks[-1]) * scales[-1])
        ticks.append(tick)
        scales.append(tempo / 1e6 / division)

    def seconds(tick: int) -> float:
        k = bisect.bisect_right(ticks, tick) - 1
        return starts[k] + (tick - ticks[k]) * scales[k]
    return seconds


def _parse_track(track: mido.MidiTrack, track_index: int, seconds, repairs: list[str]) -> list[tuple]:
    """One MIDI track -> raw parts ``(name, program, is_drum, notes [(s, e, pitch, vel)], bends, controls)``."""
    name, tick = "", 0
    program = [0] * 16
    open_notes: dict[tuple[int, int], collections.deque] = collections.defaultdict(collections.deque)
    parts: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}  # (channel, program) -> tick notes
    bends: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    ccs: dict[int, list[tuple[int, int, int]]] = collections.defaultdict(list)
    for msg in track:
        tick += msg.time
        kind = msg.type
        if kind == "track_name" and not name:
            name = msg.name.strip()
        elif kind == "program_change":
            program[msg.channel] = msg.program
        elif kind == "note_on" and msg.velocity > 0:
            open_notes[(msg.channel, msg.note)].append((tick, msg.velocity, program[msg.channel]))
        elif kind in ("note_on", "note_off"):
            queue = open_notes.get((msg.channel, msg.note))
            if queue:  # first in, first out: a re-struck pitch keeps its own note-off
                start, velocity, prog = queue.popleft()
                parts.setdefault((msg.channel, prog), []).append((start, tick, msg.note, velocity))
        elif kind == "pitchwheel":
            bends[msg.channel].append((tick, msg.pitch))
        elif kind == "control_change":
            ccs[msg.channel].append((tick, msg.control, msg.value))
    for (channel, pitch), queue in open_notes.items():
        for start, velocity, prog in queue:
            repairs.append(f"track {track_index}: note {pitch} at {seconds(start):.3f} s had no note-off; "
                           f"ended with the track")
            parts.setdefault((channel, prog), []).append((start, tick, pitch, velocity))
    out = []
    for (channel, prog), tick_notes in sorted(parts.items(), key=lambda kv: (kv[0][0], min(n[0] for n in kv[1]))):
        notes = [(seconds(s), seconds(e), p, v) for s, e, p, v in tick_notes]
        bend_events, control_events = _channel_events(
            [(seconds(t), raw) for t, raw in bends[channel]], [(seconds(t), c, v) for t, c, v in ccs[channel]])
        out.append((name, prog, channel == DRUM_CHANNEL, notes, bend_events, control_events))
    return out


def _channel_events(bends: list[tuple[float, int]], ccs: list[tuple[float, int, int]]):
    """Raw 14-bit bends and all CCs of one channel (time order) -> (bends in semitones, CC 1/7/11 series).

    The bend range is followed through RPN 0 (CC 101/100 select it, CC 6/38 set semitones/cents); a bend
    uses the range in effect at its time.
    """
    range_changes: list[tuple[float, float]] = []
    rpn, semis, cents = (127, 127), DEFAULT_BEND_RANGE, 0
    controls: dict[int, list[tuple[float, float]]] = {}
    for time, cc, value in ccs:
        if cc in CONTROLS:
            controls.setdefault(cc, []).append((time, float(value)))
        elif cc in (101, 100):
            rpn = (value, rpn[1]) if cc == 101 else (rpn[0], value)
        elif cc in (99, 98):
            rpn = (127, 127)  # an NRPN takes data entry away from RPN 0
        elif cc in (6, 38) and rpn == (0, 0):
            semis, cents = (value, 0) if cc == 6 else (semis, value)
            range_changes.append((time, semis + cents / 100.0))
    change_times = [t for t, _ in range_changes]
    out_bends = []
    for time, raw in bends:
        k = bisect.bisect_right(change_times, time) - 1
        bend_range = range_changes[k][1] if k >= 0 else DEFAULT_BEND_RANGE
        out_bends.append((time, raw / 8192.0 * bend_range))
    return out_bends, controls


def _build_score(raw: list[tuple], source: str, repairs: list[str] | None = None,
                 allow_empty: bool = False) -> Score:
    """Raw parts -> a clean :class:`Score` (repairs applied, listed and warned once)."""
    repairs = list(repairs or [])
    tracks = []
    for index, (name, program, is_drum, notes, bends, controls) in enumerate(raw):
        clean = _repair_notes(notes, f"track {index}" + (f" ({name})" if name else ""), repairs)
        if clean or allow_empty:
            tracks.append(Track(name, int(program), bool(is_drum), clean, sorted(bends, key=lambda b: b[0]),
                                {cc: sorted(ev, key=lambda e: e[0]) for cc, ev in controls.items()}))
    duration = max((n.end for t in tracks for n in t.notes), default=0.0)
    if not allow_empty and not any(t.notes for t in tracks):
        raise InputFileError(f"{source}: no notes (expected at least one note with end > start)")
    if duration > MAX_DURATION_S:
        raise InputFileError(f"{source}: a note ends at {duration:.0f} s; the file is likely corrupt")
    if repairs:
        more = f" (+{len(repairs) - 3} more)" if len(repairs) > 3 else ""
        warnings.warn(f"{source}: {len(repairs)} repair(s): " + "; ".join(repairs[:3]) + more,
                      MidiRepairWarning, stacklevel=3)
    return Score(tracks, duration, repairs)


def _repair_notes(notes: list[tuple[float, float, int, int]], label: str, repairs: list[str]) -> list[Note]:
    """Drop zero-length notes and end each same-pitch overlap where the later note starts (module docstring)."""
    kept: list[list] = []
    last_of_pitch: dict[int, list] = {}
    for start, end, pitch, velocity in sorted(notes, key=lambda n: (n[0], n[2], n[1])):
        if not end > start:
            repairs.append(f"{label}: zero-length note {pitch} at {start:.3f} s dropped")
            continue
        prev = last_of_pitch.get(pitch)
        if prev is not None and start < prev[1]:
            if start > prev[0]:
                repairs.append(f"{label}: note {pitch} at {prev[0]:.3f} s overlapped the next one; "
                               f"it now ends at {start:.3f} s")
                prev[1] = start
            else:
                repairs.append(f"{label}: duplicate note {pitch} at {start:.3f} s merged")
                prev[1] = max(prev[1], end)
                continue
        note = [start, end, pitch, velocity]
        kept.append(note)
        last_of_pitch[pitch] = note
    return [Note(float(s), float(e), int(p), int(v)) for s, e, p, v in kept]


def _bend_range_for(bends: Sequence[tuple[float, float]]) -> float:
    """The smallest whole-semitone range (at least the GM 2) that holds every bend."""
    peak = max((abs(s) for _, s in bends), default=0.0)
    return DEFAULT_BEND_RANGE if peak <= DEFAULT_BEND_RANGE else float(math.ceil(peak))


def _bend_to_raw(semitones: float, bend_range: float) -> int:
    return int(np.clip(round(semitones / bend_range * 8192), -8192, 8191))


def _rpn_bend_range(bend_range: float) -> list[tuple[int, int]]:
    """CC (number, value) sequence setting RPN 0 to ``bend_range`` semitones; empty for the default range."""
    if bend_range == DEFAULT_BEND_RANGE:
        return []
    return [(101, 0), (100, 0), (6, int(bend_range)), (38, 0), (101, 127), (100, 127)]


def _track_to_mido(track: Track, channel: int) -> mido.MidiTrack:
    """One :class:`Track` -> a mido track at the write tempo; note-offs precede note-ons on a shared tick."""
    ticks_per_s = _WRITE_PPQ * 1e6 / _WRITE_TEMPO

    def tick(t: float) -> int:
        return int(round(t * ticks_per_s))

    events: list[tuple[int, int, int, mido.Message]] = []  # (tick, priority, sequence, message)
    def add(t: int, priority: int, msg) -> None:
        events.append((t, priority, len(events), msg))

    if track.name:
        add(0, 0, mido.MetaMessage("track_name", name=track.name))
    add(0, 0, mido.Message("program_change", channel=channel, program=track.program))
    bend_range = _bend_range_for(track.pitch_bends)
    for cc, value in _rpn_bend_range(bend_range):
        add(0, 1, mido.Message("control_change", channel=channel, control=cc, value=value))
    for cc, ev in sorted(track.controls.items()):
        for t, value in ev:
            add(tick(t), 2, mido.Message("control_change", channel=channel, control=cc,
                                         value=int(np.clip(round(value), 0, 127))))
    for t, semitones in track.pitch_bends:
        add(tick(t), 2, mido.Message("pitchwheel", channel=channel, pitch=_bend_to_raw(semitones, bend_range)))
    for n in track.notes:
        add(tick(n.start), 4, mido.Message("note_on", channel=channel, note=n.pitch, velocity=n.velocity))
        add(tick(n.end), 3, mido.Message("note_off", channel=channel, note=n.pitch, velocity=0))
    out, now = mido.MidiTrack(), 0
    for t, _, _, msg in sorted(events, key=lambda e: e[:3]):
        out.append(msg.copy(time=t - now))
        now = t
    out.append(mido.MetaMessage("end_of_track", time=0))
    return out


def _atomic_save(mid: mido.MidiFile, path: str) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written MIDI file."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise MididdspError(f"{path}: cannot write MIDI, folder {directory} does not exist")
    with atomic_open(path, "wb") as f:
        mid.save(file=f)
