"""The note expression table: one row per note, the six controls beside the note and their physical quantities.

Columns (in this order; :data:`COLUMNS`):
    track, voice, note_index   int   which MIDI track, which monophonic voice of it (:func:`mididdsp.score.split_voices`)
                                     and which note of that voice (0-based, in time order)
    start, end                 float seconds
    pitch, velocity            int   MIDI 0..127
    instrument                 str   the instrument the controls describe
    volume, volume_fluctuation, volume_peak_position, vibrato, brightness, attack_noise
                               float the scaled controls, each in [0, 1] (mapping: :mod:`mididdsp.expression.controls`)
    volume_db, volume_fluctuation_db, peak_position, vibrato_extent_cents, vibrato_rate_hz, brightness_centroid,
    attack_noise_db            float the physical quantities (dB, dB, fraction, cents, Hz, harmonic number, dB)
    level_offset_db            float the recording's level relative to the instrument's reference (dB): volume_db
                                     and attack_noise_db are stored relative to it, a render adds it back
                                     (:data:`~mididdsp.expression.controls.LEVEL_OFFSET`; 0 when absent)

Each scaled control and its physical twin are kept in step through the table's ``ranges`` (``{control: (low,
high)}``; those of the model that measured it, see :mod:`mididdsp.expression.calibrate`, else the fixed
:data:`~mididdsp.expression.controls.CONTROL_RANGES`): with the fixed vibrato range of 0..60 cents, setting
``vibrato`` to 0.5 sets ``vibrato_extent_cents`` to 30, and setting ``volume_db`` sets ``volume``.

Validation happens on every construction, edit and load: a NaN or infinite value raises
:class:`mididdsp.errors.MididdspError` naming the column and row; a scaled control outside [0, 1] is clipped to
it with an :class:`ExpressionRangeWarning`; a note with ``end <= start`` raises :class:`MididdspError` naming the
row and its times (on construction, on load, with the file's name, and on an edit of ``start`` or ``end``). A
rejected edit leaves the table unchanged. Files: CSV (the header and one row per note, nothing else, so that it opens
as it is in a spreadsheet and in ``pandas.read_csv(path)``) and JSON (``{"format": ..., "ranges": {...},
"columns": [...], "notes": [{column: value}, ...]}``); floats are written with Python's shortest round-trip
representation, so save -> load gives back exactly the same numbers. The JSON carries the ranges; a CSV does
not: its numbers imply them (each scaled value is the physical one mapped through its range, so two rows
inside a range give it back), or :meth:`NoteExpression.load` takes them (``ranges=``, e.g. the model's, which
``mididdsp render`` passes); and on a CSV the scaled columns are authoritative: a physical value that disagrees with its scaled twin (edited
alone) is recomputed from it, with a warning naming the first such row. (CSVs written before this, with a first line
``# expression_ranges: {JSON}``, still load and keep those ranges.)
"""
from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from mididdsp.errors import InputFileError, MididdspError
from mididdsp.expression.names import (CONTROL_NAMES, LEVEL_CONTROLS, LEVEL_OFFSET, PHYSICAL_NAMES, PHYSICAL_OF,
                                       control_ranges)
from mididdsp.fileio import write_text_atomic

INFO_COLUMNS = ("track", "voice", "note_index", "start", "end", "pitch", "velocity", "instrument")
COLUMNS = INFO_COLUMNS + CONTROL_NAMES + PHYSICAL_NAMES + (LEVEL_OFFSET,)
INT_COLUMNS = ("track", "voice", "note_index", "pitch", "velocity")
TEXT_COLUMNS = ("instrument",)
JSON_FORMAT = "mididdsp-note-expression/2"
JSON_FORMATS = ("mididdsp-note-expression/1", JSON_FORMAT)  # /1: written before tables carried ranges
CSV_RANGES_PREFIX = "# expression_ranges: "
SCALED_OF = {physical: scaled for scaled, physical in PHYSICAL_OF.items()}


class ExpressionRangeWarning(UserWarning):
    """A scaled expression control outside [0, 1] was clipped into it."""


def _kind(column: str) -> str:
    return "int" if column in INT_COLUMNS else "text" if column in TEXT_COLUMNS else "float"


class NoteExpression:
    """Per-note expression table (see the module docstring for columns, validation and files).

    Build it from a mapping of columns (``NoteExpression({"pitch": [60, 62], ...})``; a missing physical column is
    derived from its scaled twin and vice versa, ``vibrato_rate_hz`` and ``level_offset_db`` default to 0), or
    with :meth:`load`.

    Reading: ``table["volume"]`` (a numpy copy of a column), ``table.volume`` (the same), ``table[3]`` (row 3 as a
    dict), ``table[3, "volume"]`` (one value), ``table[table.pitch > 70]`` (a new table with those rows),
    ``len(table)``, ``for row in table`` (dicts).
    Editing (validated, twins kept in step): ``table[3, "volume"] = 0.5``, ``table["vibrato"] = 0.0``,
    ``table[table.pitch > 70, "vibrato"] = 0.8``, or ``table.set("vibrato", 0.8, where=table.pitch > 70)``.
    """

    def __init__(self, columns: Mapping[str, Any], ranges: Mapping[str, Any] | None = None):
        self.ranges = control_ranges(ranges)
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise MididdspError(f"note expression: unknown column(s) {unknown}; expected columns {list(COLUMNS)}")
        missing = [c for c in INFO_COLUMNS if c not in columns]
        missing += [c for c in CONTROL_NAMES if c not in columns and PHYSICAL_OF[c] not in columns]
        if missing:
            raise MididdspError(f"note expression: missing column(s) {missing}")
        lengths = {len(v) for v in (np.asarray(columns[c], dtype=object) for c in columns) if v.ndim > 0}
        if len(lengths) > 1:
            raise MididdspError(f"note expression: columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        self._data: dict[str, np.ndarray] = {}
        for column in INFO_COLUMNS:
            self._data[column] = self._convert(column, columns[column], n)
        for name in CONTROL_NAMES:
            physical = PHYSICAL_OF[name]
            if name in columns:
                self._data[name] = self._convert(name, columns[name], n)
            if physical in columns:
                self._data[physical] = self._convert(physical, columns[physical], n)
            if name not in columns:
                self._data[name] = self._scaled_from_physical(name, self._data[physical])
            if physical not in columns:
                self._data[physical] = self._physical_from_scaled(name, self._data[name])
        for column in ("vibrato_rate_hz", LEVEL_OFFSET):  # no scaled twin; tables written before them read 0
            given = columns.get(column)
            self._data[column] = self._convert(column, given, n) if given is not None else np.zeros(n, np.float64)
        self._data = {column: self._data[column] for column in COLUMNS}
        _check_times(self._data["start"], self._data["end"])

    # ---------------------------------------------------------------------------------------------- validation
    @staticmethod
    def _convert(column: str, values: Any, n: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Values -> a validated numpy array of the column's type ([n], or broadcast to ``n``)."""
        kind = _kind(column)
        if kind == "text":
            array = np.asarray(values, dtype=object)
            return np.array([str(v) for v in np.broadcast_to(array, (n,))], dtype=object)
        try:
            array = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).copy()
        except (TypeError, ValueError):
            raise MididdspError(f"note expression column {column!r}: expected numbers, got {values!r:.80}") from None
        bad = ~np.isfinite(array)
        if bad.any():
            where = (rows if rows is not None else np.arange(n))[bad]
            raise MididdspError(f"note expression column {column!r}: NaN or infinite value at row(s) "
                                f"{where[:10].tolist()}; expected a number")
        if kind == "int":
            if (array != np.round(array)).any():
                raise MididdspError(f"note expression column {column!r}: expected whole numbers")
            limits = (0, 127) if column in ("pitch", "velocity") else (0, np.inf)
            if ((array < limits[0]) | (array > limits[1])).any():
                raise MididdspError(f"note expression column {column!r}: values out of range {limits[0]}..{limits[1]}")
            return array.astype(np.int64)
        if column in CONTROL_NAMES:
            outside = (array < 0.0) | (array > 1.0)
            if outside.any():
                where = (rows if rows is not None else np.arange(n))[outside]
                warnings.warn(f"note expression column {column!r}: {int(outside.sum())} value(s) outside [0, 1] at "
                              f"row(s) {where[:10].tolist()} clipped to [0, 1]", ExpressionRangeWarning, stacklevel=4)
                array = np.clip(array, 0.0, 1.0)
        if column in ("start", "end") and (array < 0).any():
            raise MididdspError(f"note expression column {column!r}: negative times; expected seconds >= 0")
        return array

    def _physical_from_scaled(self, name: str, scaled: np.ndarray) -> np.ndarray:
        low, high = self.ranges[name]
        return low + scaled * (high - low)

    def _scaled_from_physical(self, name: str, physical: np.ndarray) -> np.ndarray:
        low, high = self.ranges[name]
        return np.clip((physical - low) / (high - low), 0.0, 1.0)

    # ---------------------------------------------------------------------------------------------- reading
    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS

    def __len__(self) -> int:
        return len(self._data["pitch"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in range(len(self)):
            yield self._row(row)

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name not in COLUMNS:
            raise AttributeError(name)
        return self._data[name].copy()

    def _row(self, row: int) -> dict[str, Any]:
        return {column: self._data[column][row].item() if _kind(column) != "text" else self._data[column][row]
                for column in COLUMNS}

    def _rows(self, selection: Any) -> np.ndarray:
        """Row selection (int, slice, bool mask, index list) -> sorted int array of rows (IndexError if bad)."""
        n = len(self)
        if selection is None:
            return np.arange(n)
        if isinstance(selection, (int, np.integer)):
            if not -n <= selection < n:
                raise IndexError(f"row {selection} out of range for a table of {n} notes")
            return np.array([selection % n])
        if isinstance(selection, slice):
            return np.arange(n)[selection]
        array = np.asarray(selection)
        if array.dtype == bool:
            if array.shape != (n,):
                raise IndexError(f"boolean row mask of shape {array.shape}; expected ({n},)")
            return np.flatnonzero(array)
        if not np.issubdtype(array.dtype, np.integer):
            raise IndexError(f"rows must be ints, a slice or a boolean mask, got {array.dtype}")
        if ((array < -n) | (array >= n)).any():
            raise IndexError(f"row index out of range for a table of {n} notes")
        return array % n

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return getattr(self, key) if key in COLUMNS else self._unknown(key)
        if isinstance(key, tuple) and len(key) == 2:
            selection, column = key
            if column not in COLUMNS:
                self._unknown(column)
            values = self._data[column][self._rows(selection)]
            if isinstance(selection, (int, np.integer)):
                return values[0].item() if _kind(column) != "text" else values[0]
            return values.copy()
        if isinstance(key, (int, np.integer)):
            return self._row(int(self._rows(key)[0]))
        rows = self._rows(key)
        return NoteExpression({column: values[rows] for column, values in self._data.items()}, self.ranges)

    @staticmethod
    def _unknown(column: Any):
        raise KeyError(f"unknown column {column!r}; columns: {', '.join(COLUMNS)}")

    # ---------------------------------------------------------------------------------------------- editing
    def set(self, column: str, value: Any, where: Any = None) -> "NoteExpression":
        """Set ``column`` to ``value`` (a scalar or one value per selected row) on the rows ``where`` selects
        (a boolean mask, indices, a slice, an int; default: all rows). Validated as described in the module
        docstring; a scaled control's physical twin follows it, and vice versa. Returns the table (chainable)."""
        if column not in COLUMNS:
            self._unknown(column)
        rows = self._rows(where)
        # Everything is validated and computed before anything is written: a rejected edit leaves the table as it was.
        new = self._convert(column, value, len(rows), rows)
        updates = {column: new}
        if column in ("start", "end"):
            times = {"start": self._data["start"].copy(), "end": self._data["end"].copy()}
            times[column][rows] = new
            _check_times(times["start"], times["end"])
        if column in PHYSICAL_OF:
            updates[PHYSICAL_OF[column]] = self._physical_from_scaled(column, new)
        elif column in SCALED_OF:
            updates[SCALED_OF[column]] = self._scaled_from_physical(SCALED_OF[column], new)
        for name, values in updates.items():
            self._data[name][rows] = values
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, str):
            self.set(key, value)
        elif isinstance(key, tuple) and len(key) == 2:
            self.set(key[1], value, where=key[0])
        else:
            raise KeyError("assign a column (table['vibrato'] = v) or rows and a column (table[rows, 'vibrato'] = v)")

    def copy(self) -> "NoteExpression":
        return NoteExpression({column: values.copy() for column, values in self._data.items()}, self.ranges)

    def with_level_offset(self, offset_db: Any) -> "NoteExpression":
        """A copy at the same absolute levels, expressed relative to ``offset_db`` (dB, a scalar or one per row):
        ``volume_db`` and ``attack_noise_db`` move by the old offset minus the new one (their scaled twins follow),
        ``level_offset_db`` becomes ``offset_db``. A render of either table plays the same levels."""
        out = self.copy()
        offset = self._convert(LEVEL_OFFSET, offset_db, len(self))
        shift = self._data[LEVEL_OFFSET] - offset
        for name in LEVEL_CONTROLS:
            out.set(PHYSICAL_OF[name], self._data[PHYSICAL_OF[name]] + shift)
        out.set(LEVEL_OFFSET, offset)
        return out

    def controls_array(self) -> np.ndarray:
        """The six scaled controls as float32 [notes, 6], in :data:`CONTROL_NAMES` order."""
        return np.stack([self._data[name] for name in CONTROL_NAMES], axis=1).astype(np.float32)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoteExpression) or len(other) != len(self):
            return False
        return other.ranges == self.ranges and all(np.array_equal(self._data[c], other._data[c]) for c in COLUMNS)

    def __repr__(self) -> str:
        return f"NoteExpression({len(self)} notes; columns: {', '.join(COLUMNS)})"

    # ---------------------------------------------------------------------------------------------- pandas
    def to_dataframe(self):
        """The table as a ``pandas.DataFrame`` (pandas is imported only here); the ranges go in
        ``frame.attrs["expression_ranges"]``."""
        import pandas as pd

        frame = pd.DataFrame({column: values.copy() for column, values in self._data.items()}, columns=list(COLUMNS))
        frame.attrs["expression_ranges"] = self._ranges_plain()
        return frame

    @classmethod
    def from_dataframe(cls, frame, ranges: Mapping[str, Any] | None = None) -> "NoteExpression":
        """From a DataFrame; ``ranges`` default to ``frame.attrs["expression_ranges"]`` (then the fixed ones)."""
        if ranges is None:
            ranges = getattr(frame, "attrs", {}).get("expression_ranges")
        return cls({column: frame[column].to_numpy() for column in frame.columns}, ranges)

    def _ranges_plain(self) -> dict[str, list[float]]:
        return {name: [float(low), float(high)] for name, (low, high) in self.ranges.items()}

    # ---------------------------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write ``.csv`` or ``.json`` (by extension) atomically, losslessly."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise MididdspError(f"{path}: expression tables are saved as .csv or .json")
        text = self._csv_text() if suffix == ".csv" else self._json_text()
        write_text_atomic(path, text)

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write CSV atomically, whatever the extension."""
        write_text_atomic(Path(path), self._csv_text())

    def to_json(self, path: str | os.PathLike) -> None:
        """Write JSON atomically, whatever the extension."""
        write_text_atomic(Path(path), self._json_text())

    def _plain(self, column: str, row: int) -> Any:
        value = self._data[column][row]
        return str(value) if _kind(column) == "text" else int(value) if _kind(column) == "int" else float(value)

    def _csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in range(len(self)):
            writer.writerow([repr(v) if isinstance(v, float) else v
                             for v in (self._plain(column, row) for column in COLUMNS)])
        return buffer.getvalue()

    def _json_text(self) -> str:
        notes = [{column: self._plain(column, row) for column in COLUMNS} for row in range(len(self))]
        return json.dumps({"format": JSON_FORMAT, "ranges": self._ranges_plain(), "columns": list(COLUMNS),
                           "notes": notes}, indent=1) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike, ranges: Mapping[str, Any] | None = None) -> "NoteExpression":
        """Read a table written by :meth:`save` (``.csv`` or ``.json``); InputFileError naming the file if it is
        missing or malformed, MididdspError naming the file, row and column for bad values (NaN, text in a number
        column, unknown/missing columns, a note with end <= start).

        ``ranges``: the scales of the controls (a model's ``expression_ranges``); they replace the file's own (a
        JSON's) when given. For a CSV without them, the fixed ranges apply."""
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"{path}: no such expression table")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise InputFileError(f"{path}: unreadable expression table ({error.__class__.__name__})") from None
        is_json = path.suffix.lower() == ".json"
        try:
            columns, file_ranges = _parse_json(text) if is_json else _parse_csv(text)
        except (ValueError, KeyError, TypeError) as error:
            raise InputFileError(f"{path}: not a note expression table ({error})") from None
        known = set(ranges or {}) if ranges is not None else set(file_ranges or {})
        ranges = ranges if ranges is not None else file_ranges
        if ranges is None and not is_json:
            ranges = _ranges_from_rows(columns)
            known = set(ranges or {})
        try:
            if not is_json:  # (a control whose range is unknown keeps both columns as they are)
                columns = _scaled_authoritative(columns, ranges, path, known)
            return cls(columns, ranges)
        except MididdspError as error:
            raise MididdspError(f"{path}: {error}") from None

    read_csv = load
    read_json = load


def _check_times(start: np.ndarray, end: np.ndarray) -> None:
    """MididdspError naming the rows (0-based) and their times if any note has end <= start."""
    bad = np.flatnonzero(end <= start)
    if len(bad):
        shown = ", ".join(f"row {row} (start {float(start[row])!r} s, end {float(end[row])!r} s)" for row in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise MididdspError(f"note expression: end <= start at {shown}{more}; expected every note to end after it "
                            f"starts")


def _ranges_from_rows(columns: dict[str, list]) -> dict[str, tuple[float, float]] | None:
    """The (low, high) of each control that a CSV's own rows imply (scaled = (physical - low) / (high - low) on
    rows inside the range): a CSV carries its ranges in its numbers. The line through two rows with distinct
    scaled values, chosen among a few candidates as the one most rows agree with. Controls without two such rows
    keep the fixed ranges."""
    found = {}
    for name in CONTROL_NAMES:
        physical = PHYSICAL_OF[name]
        if name not in columns or physical not in columns:
            continue
        try:
            scaled = np.asarray(columns[name], dtype=np.float64)
            given = np.asarray(columns[physical], dtype=np.float64)
        except (TypeError, ValueError):
            continue
        inside = np.flatnonzero((scaled > 1e-9) & (scaled < 1 - 1e-9) & np.isfinite(given))
        candidates = inside[np.unique(scaled[inside], return_index=True)[1]][:6]
        best, best_votes = None, 0
        for i in range(len(candidates)):
            for j in range(i + 1, len(candidates)):
                a, b = candidates[i], candidates[j]
                span = (given[b] - given[a]) / (scaled[b] - scaled[a])
                if not np.isfinite(span) or span <= 0:
                    continue
                low = given[a] - scaled[a] * span
                votes = int(np.isclose(low + scaled[inside] * span, given[inside], rtol=0, atol=2e-6 * span).sum())
                if votes > best_votes:
                    best, best_votes = (float(low), float(low + span)), votes
        if best is not None and best_votes >= 2:
            found[name] = (round(best[0], 9), round(best[1], 9))
    return found or None


def _scaled_authoritative(columns: dict[str, list], ranges: Mapping[str, Any] | None, path: Path,
                          known: set[str]) -> dict[str, list]:
    """CSV columns where every physical twin agrees with its scaled control: a physical value that the scaled one
    does not give (an edit of the physical column alone) is replaced by the scaled one's, with a warning naming
    the first such row. A physical value outside the range, whose scaled value is clipped, agrees."""
    resolved = control_ranges(ranges)
    columns = dict(columns)
    for name in CONTROL_NAMES:
        physical = PHYSICAL_OF[name]
        if physical not in columns or name not in columns or name not in known:
            continue
        low, high = resolved[name]
        try:
            scaled = np.asarray(columns[name], dtype=np.float64)
            given = np.asarray(columns[physical], dtype=np.float64)
        except (TypeError, ValueError):
            continue  # the constructor names the bad value
        # float32 extraction: scaled values carry about 1e-7 of rounding
        agrees = np.isclose(np.clip((given - low) / (high - low), 0, 1), np.clip(scaled, 0, 1), rtol=0, atol=2e-6)
        differs = np.flatnonzero(~agrees & np.isfinite(given) & np.isfinite(scaled))
        if len(differs):
            warnings.warn(f"{path}: row {int(differs[0])}: {physical} {float(given[differs[0]])!r} does not match {name} "
                          f"{float(scaled[differs[0]])!r}; the scaled column is used (edit {name}, or both)",
                          ExpressionRangeWarning, stacklevel=3)
            fixed = given.copy()
            fixed[differs] = low + np.clip(scaled[differs], 0, 1) * (high - low)
            columns[physical] = fixed.tolist()
    return columns


def _parse_csv(text: str) -> tuple[dict[str, list], dict | None]:
    ranges = None
    if text.startswith("#"):
        first, _, text = text.partition("\n")
        if first.startswith(CSV_RANGES_PREFIX):
            ranges = json.loads(first[len(CSV_RANGES_PREFIX):])
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ValueError("empty file")
    header, body = rows[0], [r for r in rows[1:] if r]
    if any(len(r) != len(header) for r in body):
        raise ValueError("rows with a different number of fields than the header")
    columns: dict[str, list] = {}
    for index, column in enumerate(header):
        values = [r[index] for r in body]
        if _kind(column) == "text":
            columns[column] = values
            continue
        columns[column] = []
        for row, value in enumerate(values):
            try:
                columns[column].append(float(value))
            except ValueError:
                raise ValueError(f"row {row}, column {column!r}: {value!r} is not a number") from None
    return columns, ranges


def _parse_json(text: str) -> tuple[dict[str, list], dict | None]:
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("format") not in JSON_FORMATS:
        raise ValueError(f"expected a JSON object with format {JSON_FORMAT!r}")
    names = document["columns"]
    return {column: [note[column] for note in document["notes"]] for column in names}, document.get("ranges")
