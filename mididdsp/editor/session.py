"""One editing session: a MIDI model, a score, the current note expression, undo/redo, and cached voice audio.

Everything the web page can do is a method here, so the JSON API (:mod:`mididdsp.editor.server`) only parses and
answers requests, and tests can drive a session without HTTP. Every method validates its whole input before it
changes anything (:class:`ApiError` names what was wrong): an edit applies entirely or not at all.

The render is incremental. A voice's dry audio depends only on its notes, its rows of the expression table, its
track's instrument and the seed (:meth:`mididdsp.render.MidiModel.render_voices`), so the session keeps each voice's
last result (and a few older ones, by content, which makes undo and redo instant) and, after an edit, renders only
the voices whose inputs changed; :meth:`~mididdsp.render.MidiModel.mix_voices` then mixes them with the others (a
bus whose voices did not change keeps its reverberated audio). The result is bit-identical to a full
:meth:`~mididdsp.render.MidiModel.render` of the same state.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mididdsp.errors import MididdspError
from mididdsp.expression.controls import CONTROL_NAMES, LEVEL_OFFSET, PHYSICAL_OF, PHYSICAL_UNITS
from mididdsp.expression.table import NoteExpression
from mididdsp.synthesis.generator import EXPRESSION_INPUTS

FRAME_RATE = 250            # the generator's frames per second (curves)
MEMO_VOICES = 256           # voice renders kept by content (undo / redo / going back to an earlier value)
HISTORY = 200               # undo steps kept
MAX_IDS = 100_000           # notes one request may name
CURVE_MARGIN_S = (0.05, 0.3)  # seconds shown before a note's start and after its end (the release)


class ApiError(Exception):
    """A request the session refuses: ``status`` (HTTP code) and a one-line ``message`` saying what was wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclasses.dataclass
class Snapshot:
    """What undo restores: the expression table and each track's instrument."""

    expression: NoteExpression
    instruments: dict[int, str]


def note_id(track: int, voice: int, index: int) -> str:
    """A note's stable id: ``"track.voice.index"`` (its place in the score; edits never move notes)."""
    return f"{track}.{voice}.{index}"


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean, not NaN or infinite)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class EditorSession:
    """The state of one editor: see the module docstring. Methods are safe to call from several threads (one
    lock); each returns plain JSON-ready data or bytes."""

    def __init__(self, model, score, expression: NoteExpression | None = None, seed: int = 0,
                 temperature: float = 1.0, name: str = ""):
        self.model, self.score, self.seed, self.name = model, score, int(seed), name
        self.temperature = float(temperature)
        self.lock = threading.RLock()
        self.voices = model.voices(score)
        if not self.voices:
            raise MididdspError(f"{name or 'the MIDI file'}: no melodic notes to edit (only drums or empty tracks)")
        names, _ = model.track_instruments(score)
        self.instruments: dict[int, str] = {t: n for t, n in enumerate(names) if n is not None}
        self.keys = [(t, v, i) for t, v, notes in self.voices for i in range(len(notes))]
        self.notes = {(t, v, i): note for t, v, notes in self.voices for i, note in enumerate(notes)}
        if expression is None:
            expression = model.expression(score, self.seed, self.temperature, track_instruments=self.instruments)
        self.expression = self._canonical(expression)
        self.instruments.update(self._table_instruments(self.expression))
        self.row_of = {note_id(*key): row for row, key in enumerate(self.keys)}
        self.undo_stack: list[Snapshot] = []
        self.redo_stack: list[Snapshot] = []
        self.voice_audio: dict[tuple[int, int], Any] = {}      # (track, voice) -> VoiceAudio of the current state
        self.voice_inputs: dict[tuple[int, int], bytes] = {}   # (track, voice) -> what its VoiceAudio was made from
        self.memo: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        self.wet_cache: dict = {}
        self.last_render: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- the table
    def _canonical(self, expression: NoteExpression) -> NoteExpression:
        """The table in the session's row order (one row per note, in :attr:`keys` order); MididdspError naming the
        first row that does not describe this score (the table of another file, a missing note)."""
        from mididdsp.render import match_expression

        match_expression(expression, self.voices, self.model.ranges)  # raises on any mismatch
        row_of = {(int(t), int(v), int(i)): row for row, (t, v, i) in
                  enumerate(zip(expression.track, expression.voice, expression.note_index))}
        table = expression[np.array([row_of[key] for key in self.keys], dtype=np.int64)]
        return NoteExpression({c: table[c] for c in table.columns}, self.model.ranges)

    def _table_instruments(self, expression: NoteExpression) -> dict[int, str]:
        """Each track's instrument as a table names it, where all its rows agree on one the model has."""
        found: dict[int, str] = {}
        for track in sorted(set(expression.track.tolist())):
            names = set(expression[expression.track == track, "instrument"].tolist())
            if len(names) == 1 and next(iter(names)).lower() in self.model.instruments:
                found[track] = next(iter(names)).lower()
        return found

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.expression.copy(), dict(self.instruments))

    def _commit(self, expression: NoteExpression, instruments: dict[int, str]) -> None:
        """Make a new state current, the old one undoable."""
        self.undo_stack.append(self._snapshot())
        del self.undo_stack[:-HISTORY]
        self.redo_stack.clear()
        self.expression, self.instruments = expression, instruments

    def _ids(self, ids: Any, what: str = "ids") -> list[int]:
        """Rows of a JSON list of note ids (ApiError for a wrong type or an unknown id)."""
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, f"{what}: expected a list of note ids (strings such as \"0.0.3\")")
        if len(ids) > MAX_IDS:
            raise ApiError(413, f"{what}: {len(ids)} ids; at most {MAX_IDS}")
        unknown = [i for i in ids if i not in self.row_of]
        if unknown:
            raise ApiError(404, f"{what}: unknown note id {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)"
                                                                             if len(unknown) > 1 else ""))
        return [self.row_of[i] for i in ids]

    # ------------------------------------------------------------------------------------------- reading
    def controls_info(self) -> list[dict[str, Any]]:
        """The six controls: name, physical twin, unit and range (the page converts slider values with them)."""
        return [{"name": name, "physical": PHYSICAL_OF[name], "unit": PHYSICAL_UNITS[PHYSICAL_OF[name]],
                 "low": float(self.model.ranges[name][0]), "high": float(self.model.ranges[name][1])}
                for name in CONTROL_NAMES]

    def note_json(self, row: int) -> dict[str, Any]:
        values = self.expression[row]
        track, voice, index = self.keys[row]
        return {"id": note_id(track, voice, index), "track": track, "voice": voice, "index": index,
                "start": values["start"], "end": values["end"], "pitch": values["pitch"],
                "velocity": values["velocity"], "instrument": self.instruments[track],
                "controls": {name: values[name] for name in CONTROL_NAMES},
                "physical": {PHYSICAL_OF[name]: values[PHYSICAL_OF[name]] for name in CONTROL_NAMES},
                "vibrato_rate_hz": values["vibrato_rate_hz"], LEVEL_OFFSET: values[LEVEL_OFFSET]}

    def state(self) -> dict[str, Any]:
        """``GET /api/session``: the file, the model's instruments, the controls, the tracks and every note."""
        from mididdsp.score import gm_program_name

        with self.lock:
            tracks = [{"index": t, "name": track.name or f"track {t}", "program": track.program,
                       "program_name": gm_program_name(track.program), "is_drum": track.is_drum,
                       "instrument": self.instruments.get(t), "notes": len(track.notes)}
                      for t, track in enumerate(self.score.tracks)]
            return {"file": self.name, "duration": self.duration(), "sample_rate": 16000, "seed": self.seed,
                    "temperature": self.temperature, "instruments": sorted(self.model.instruments),
                    "controls": self.controls_info(), "tracks": tracks,
                    "notes": [self.note_json(row) for row in range(len(self.keys))],
                    "can_undo": bool(self.undo_stack), "can_redo": bool(self.redo_stack)}

    def duration(self) -> float:
        from mididdsp.render import TAIL_S

        return max(n.end for n in self.notes.values()) + TAIL_S

    def expression_csv(self) -> str:
        """``GET /api/expression.csv``: the table as ``mididdsp render --expression-in`` reads it."""
        with self.lock, tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "expression.csv"
            self.expression.to_csv(path)
            return path.read_text()

    # ------------------------------------------------------------------------------------------- editing
    def edit_notes(self, edits: Any) -> dict[str, Any]:
        """``PATCH /api/notes``: ``[{"id": ..., control: value in [0, 1], ...}, ...]``, all or nothing."""
        if not isinstance(edits, list) or not edits:
            raise ApiError(400, "edits: expected a non-empty list of {\"id\": ..., control: value} objects")
        if len(edits) > MAX_IDS:
            raise ApiError(413, f"edits: {len(edits)} edits; at most {MAX_IDS}")
        with self.lock:
            changes: list[tuple[int, str, float]] = []
            for number, edit in enumerate(edits):
                if not isinstance(edit, dict):
                    raise ApiError(400, f"edits[{number}]: expected an object, got {type(edit).__name__}")
                if not isinstance(edit.get("id"), str):
                    raise ApiError(400, f"edits[{number}].id: expected a note id (a string such as \"0.0.3\")")
                row = self._ids([edit["id"]], f"edits[{number}].id")[0]
                for key, value in edit.items():
                    if key == "id":
                        continue
                    if key not in CONTROL_NAMES:
                        raise ApiError(400, f"edits[{number}]: unknown control {key!r}; expected some of "
                                            f"{', '.join(CONTROL_NAMES)}")
                    if not is_number(value):
                        raise ApiError(400, f"edits[{number}].{key}: {value!r} is not a number")
                    if not 0.0 <= value <= 1.0:
                        raise ApiError(400, f"edits[{number}].{key}: {value!r} is outside [0, 1]")
                    changes.append((row, key, float(value)))
            expression = self.expression.copy()
            for row, key, value in changes:
                expression.set(key, value, where=row)
            self._commit(expression, dict(self.instruments))
            return {"notes": [self.note_json(row) for row in sorted({row for row, _, _ in changes})]}

    def set_instruments(self, edits: Any) -> dict[str, Any]:
        """``PATCH /api/tracks``: ``[{"index": track, "instrument": name}, ...]``, all or nothing."""
        if not isinstance(edits, list) or not edits:
            raise ApiError(400, "edits: expected a non-empty list of {\"index\": track, \"instrument\": name} objects")
        with self.lock:
            instruments = dict(self.instruments)
            for number, edit in enumerate(edits):
                if not isinstance(edit, dict) or set(edit) != {"index", "instrument"}:
                    raise ApiError(400, f"edits[{number}]: expected {{\"index\": track, \"instrument\": name}}")
                index, name = edit["index"], edit["instrument"]
                if not isinstance(index, int) or isinstance(index, bool) or index not in self.instruments:
                    raise ApiError(404, f"edits[{number}].index: {index!r} is not a melodic track; expected one of "
                                        f"{sorted(self.instruments)}")
                if not isinstance(name, str) or name.lower() not in self.model.instruments:
                    raise ApiError(400, f"edits[{number}].instrument: {name!r}; this model has "
                                        f"{', '.join(sorted(self.model.instruments))}")
                instruments[index] = name.lower()
            expression = self.expression.copy()
            levels = self.model.velocity_levels
            for track, name in instruments.items():
                rows = expression.track == track
                expression.set("instrument", name, where=rows)
                if levels is not None and name != self.instruments[track]:
                    # the track keeps its dynamics and moves to the level the new instrument's recordings have at
                    # the same velocities (mididdsp.expression.levels); a model without the fit keeps the offset
                    shift = levels.instrument_change_db(self.instruments[track], name)
                    expression.set(LEVEL_OFFSET, expression[rows, LEVEL_OFFSET] + shift, where=rows)
            self._commit(expression, instruments)
            return {"tracks": [{"index": t, "instrument": n} for t, n in sorted(instruments.items())]}

    def resample(self, request: Any) -> dict[str, Any]:
        """``POST /api/resample``: new expression for the notes ``ids`` from the prior (``seed``, ``temperature``),
        keeping ``fixed_columns`` (on every note) at their current values; the other notes do not change."""
        if not isinstance(request, dict):
            raise ApiError(400, "expected a JSON object with ids, seed, temperature and fixed_columns")
        unknown = sorted(set(request) - {"ids", "seed", "temperature", "fixed_columns"})
        if unknown:
            raise ApiError(400, f"unknown field(s) {unknown}; expected ids, seed, temperature, fixed_columns")
        seed = request.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 62:
            raise ApiError(400, f"seed: {seed!r}; expected a whole number >= 0")
        temperature = request.get("temperature", 1.0)
        if not is_number(temperature) or not 0 <= temperature <= 10:
            raise ApiError(400, f"temperature: {temperature!r}; expected a number in 0..10")
        fixed = request.get("fixed_columns", [])
        if not isinstance(fixed, list) or not all(isinstance(c, str) and c in EXPRESSION_INPUTS for c in fixed):
            raise ApiError(400, f"fixed_columns: {fixed!r}; expected a list of some of {', '.join(EXPRESSION_INPUTS)}")
        with self.lock:
            rows = self._ids(request.get("ids"))
            if not rows:
                raise ApiError(400, "ids: empty; select notes to resample")
            sampled = self.model.expression(self.score, seed, float(temperature), track_instruments=self.instruments,
                                            fixed=self.expression if fixed else None,
                                            fixed_columns=fixed or None)
            sampled = self._canonical(sampled)
            expression = self.expression.copy()
            where = np.array(sorted(set(rows)), dtype=np.int64)
            for column in (*CONTROL_NAMES, "vibrato_rate_hz"):
                if column not in fixed:
                    expression.set(column, sampled[where, column], where=where)
            self._commit(expression, dict(self.instruments))
            return {"notes": [self.note_json(row) for row in where.tolist()]}

    def load_csv(self, text: str) -> dict[str, Any]:
        """``PUT /api/expression.csv``: replace the table (undoable); ApiError 400 saying what is wrong with it.
        Returns ``messages`` (e.g. values clipped into [0, 1])."""
        with self.lock, tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "expression.csv"
            path.write_text(text)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    table = self._canonical(NoteExpression.load(path, ranges=self.model.ranges))
                except MididdspError as error:
                    raise ApiError(400, "expression table: " + str(error).replace(f"{path}: ", "")) from None
            instruments = {**self.instruments, **self._table_instruments(table)}
            for track, name in instruments.items():
                table.set("instrument", name, where=table.track == track)
            self._commit(table, instruments)
            return {"messages": [str(w.message).replace(f"{path}: ", "") for w in caught], "notes": len(table)}

    def undo(self) -> dict[str, Any]:
        with self.lock:
            if not self.undo_stack:
                raise ApiError(409, "nothing to undo")
            self.redo_stack.append(self._snapshot())
            state = self.undo_stack.pop()
            self.expression, self.instruments = state.expression, state.instruments
            return {"can_undo": bool(self.undo_stack), "can_redo": True}

    def redo(self) -> dict[str, Any]:
        with self.lock:
            if not self.redo_stack:
                raise ApiError(409, "nothing to redo")
            self.undo_stack.append(self._snapshot())
            state = self.redo_stack.pop()
            self.expression, self.instruments = state.expression, state.instruments
            return {"can_undo": True, "can_redo": bool(self.redo_stack)}

    # ------------------------------------------------------------------------------------------- audio
    def _voice_inputs(self) -> dict[tuple[int, int], bytes]:
        """What each voice's audio depends on that an edit can change: its instrument and its rows of the table."""
        from mididdsp.render import match_expression

        rows = match_expression(self.expression, self.voices, self.model.ranges)
        return {(t, v): self.instruments[t].encode() + b"\0" + rows[(t, v)].tobytes() for t, v, _ in self.voices}

    def update_audio(self, processes: int = 1) -> dict[str, int]:
        """Render the voices whose inputs changed since their audio was made (from the memo where it has them).
        ``processes``: see :meth:`~mididdsp.render.MidiModel.render_voices` (the command's first render, before
        the server's threads start, forks)."""
        with self.lock:
            inputs = self._voice_inputs()
            stale = {key for key, data in inputs.items() if self.voice_inputs.get(key) != data}
            for key in list(stale):
                memo_key = repr(key).encode() + inputs[key]
                if memo_key in self.memo:
                    self.voice_audio[key] = self.memo[memo_key]
                    self.memo.move_to_end(memo_key)
                    self.voice_inputs[key] = inputs[key]
                    stale.discard(key)
            if stale:
                rendered = self.model.render_voices(self.score, self.expression, self.seed,
                                                    track_instruments=self.instruments, only=stale,
                                                    processes=processes)
                for key, audio in rendered.items():
                    self.voice_audio[key], self.voice_inputs[key] = audio, inputs[key]
                    self.memo[repr(key).encode() + inputs[key]] = audio
                while len(self.memo) > MEMO_VOICES:
                    self.memo.popitem(last=False)
            return {"voices_rendered": len(stale), "voices": len(inputs)}

    def render(self, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, list[str]]:
        """The current state's audio (float32, 16 kHz; from ``start`` to ``end`` seconds when given) and the
        render's messages (e.g. a mix scaled down to avoid clipping)."""
        with self.lock:
            work = self.update_audio()
            result = self.model.mix_voices(self.score, self.voice_audio, reverb=True, stems=False,
                                           wet_cache=self.wet_cache)
            self.last_render = work
            audio = result.audio
            first = 0 if start is None else int(round(start * result.sample_rate))
            stop = len(audio) if end is None else int(round(end * result.sample_rate))
            return audio[max(0, first):max(0, stop)], result.messages

    def render_wav(self, request: Any = None) -> tuple[bytes, list[str]]:
        """``POST /api/render``: a float32 WAV of the current state (``{"start": s, "end": s}`` optional)."""
        from mididdsp.audio import float_wav_bytes
        from mididdsp.dsp import SAMPLE_RATE

        request = {} if request is None else request
        if not isinstance(request, dict) or set(request) - {"start", "end"}:
            raise ApiError(400, "expected {} or {\"start\": seconds, \"end\": seconds}")
        start, end = request.get("start"), request.get("end")
        for key, value in (("start", start), ("end", end)):
            if value is not None and (not is_number(value) or value < 0):
                raise ApiError(400, f"{key}: {value!r}; expected seconds >= 0")
        if start is not None and end is not None and end <= start:
            raise ApiError(400, f"end {end!r} <= start {start!r}")
        audio, messages = self.render(start, end)
        return float_wav_bytes(audio, SAMPLE_RATE), messages

    def curves(self, ident: Any) -> dict[str, Any]:
        """``GET /api/notes/{id}/curves``: the level (dB) and pitch (Hz) the generator made for the note, frame by
        frame (250 Hz) from a little before its start to a little after its end; null where the voice is silent."""
        with self.lock:
            row = self._ids([ident], "id")[0]
            track, voice, _ = self.keys[row]
            self.update_audio()
            audio = self.voice_audio[(track, voice)]
            note = self.notes[self.keys[row]]
            first = max(0, int(math.floor((note.start - CURVE_MARGIN_S[0]) * FRAME_RATE)))
            stop = int(math.ceil((note.end + CURVE_MARGIN_S[1]) * FRAME_RATE))
            level = np.full(stop - first, -100.0)
            f0 = np.full(stop - first, np.nan)
            for span_first, span_f0, span_db in audio.curves:
                a, b = max(first, span_first), min(stop, span_first + len(span_f0))
                if a < b:
                    level[a - first:b - first] = span_db[a - span_first:b - span_first]
                    f0[a - first:b - first] = span_f0[a - span_first:b - span_first]
            f0[level <= -99.0] = np.nan
            return {"id": ident, "frame_rate": FRAME_RATE, "start": first / FRAME_RATE,
                    "note_start": note.start, "note_end": note.end, "pitch": note.pitch,
                    "amplitude_db": [round(float(x), 3) for x in level],
                    "f0_hz": [None if not math.isfinite(x) else round(float(x), 4) for x in f0]}
