"""Data sources: where recordings (audio, optionally aligned notes) come from.

Every source yields :class:`Recording` items (and :class:`SkippedFile` items for files it cannot pair up); the
preparation step (:mod:`mididdsp.datasets.prepare`) turns them into feature shards. Four layouts are understood:

``audio:DIR[:INSTRUMENT]``  a folder of audio files, searched recursively. Instrument label: INSTRUMENT if given,
                            else the name of the folder holding the file.
``pairs:DIR[:INSTRUMENT]``  audio files with a MIDI file of the same stem beside them (the MIDI aligned to the
                            audio). Audio without MIDI is kept as audio-only; MIDI without audio is skipped.
``urmp:DIR``                the URMP layout: per-piece folders with separated tracks ``AuSep_<n>_<instr>_<piece>.wav``
                            and note annotations ``Notes_<n>_<instr>_<piece>.txt`` (onset_s, frequency_hz,
                            duration_s per line). Instrument from the abbreviation (vn -> violin, ...).
``corpus:DIR``              the SoundFont corpus written by ``mididdsp corpus``: ``manifest.json`` and, per
                            recording, ``NAME.wav``, ``NAME.mid``, ``NAME.notes.csv``; instrument from the manifest.
``DIR``                     detected: manifest.json -> corpus, Notes_*.txt -> urmp, .mid beside audio -> pairs,
                            else audio. A single audio file is an audio source of one recording.

Recording ids are ``<source folder name>/<path relative to it, without extension>``: stable across runs, so the
train/valid/test split (a hash of the id) and the resumable shard cache are stable too.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mididdsp.errors import InputFileError, MididdspError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
MIDI_EXTENSIONS = (".mid", ".midi")
SOURCE_KINDS = ("audio", "pairs", "urmp", "corpus")

# URMP instrument abbreviations -> the instrument names used across mididdsp (as in datasets.corpus).
URMP_INSTRUMENTS: dict[str, str] = {
    "vn": "violin", "va": "viola", "vc": "cello", "db": "contrabass", "fl": "flute", "ob": "oboe",
    "cl": "clarinet", "sax": "saxophone", "bn": "bassoon", "tpt": "trumpet", "hn": "horn", "tbn": "trombone",
    "tba": "tuba",
}
# URMP annotations carry no dynamics; notes get this nominal MIDI velocity.
URMP_VELOCITY = 100

_URMP_AUDIO = re.compile(r"^AuSep_(\d+)_([A-Za-z]+)_(.+)$")
_URMP_NOTES = re.compile(r"^Notes_(\d+)_([A-Za-z]+)_(.+)$")


@dataclass(frozen=True)
class Recording:
    """One recording to prepare. ``midi_path`` / ``notes_path`` hold the aligned score when there is one
    (``notes_path``: URMP ``Notes_*.txt`` or corpus ``*.notes.csv``, read by :func:`read_notes`)."""

    id: str
    audio_path: Path
    midi_path: Path | None
    notes_path: Path | None
    instrument: str
    source: str = "audio"


@dataclass(frozen=True)
class SkippedFile:
    """A file a source saw but cannot use, and why (reported, never fatal)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    path: Path
    instrument: str | None = None


def _recording_id(root: Path, path: Path) -> str:
    relative = path.relative_to(root) if path != root else Path(path.name)
    return f"{root.name}/{relative.with_suffix('').as_posix()}"


def _audio_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not p.name.startswith("."))


def _folder_label(path: Path) -> str:
    return path.resolve().parent.name or "unknown"


def audio_folder(root: str | Path, instrument: str | None = None) -> Iterator[Recording]:
    """Audio files under ``root`` (recursive), no score. Instrument: ``instrument`` or the parent folder's name."""
    root = Path(root)
    base = root.parent if root.is_file() else root
    for path in _audio_files(root):
        yield Recording(_recording_id(base, path), path, None, None, instrument or _folder_label(path), "audio")


def _midi_beside(audio_path: Path) -> Path | None:
    for extension in MIDI_EXTENSIONS + tuple(e.upper() for e in MIDI_EXTENSIONS):
        candidate = audio_path.with_suffix(extension)
        if candidate.is_file():
            return candidate
    return None


def audio_midi_pairs(root: str | Path, instrument: str | None = None) -> Iterator[Recording | SkippedFile]:
    """Audio files with the same-stem MIDI file beside them. Audio without MIDI is yielded audio-only;
    MIDI without audio is reported as skipped."""
    root = Path(root)
    used_midi: set[Path] = set()
    for path in _audio_files(root):
        midi = _midi_beside(path)
        if midi is not None:
            used_midi.add(midi)
        yield Recording(_recording_id(root, path), path, midi, None, instrument or _folder_label(path), "pairs")
    for midi in sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_EXTENSIONS):
        if midi not in used_midi:
            yield SkippedFile(midi, "MIDI file without an audio file of the same stem")


def urmp(root: str | Path) -> Iterator[Recording | SkippedFile]:
    """Separated tracks of the URMP layout with their ``Notes_*.txt`` annotations (see module docstring)."""
    root = Path(root)
    notes_by_key: dict[tuple[Path, str], Path] = {}
    for notes in sorted(root.rglob("Notes_*.txt")):
        match = _URMP_NOTES.match(notes.stem)
        if match:
            notes_by_key[(notes.parent, "_".join(match.groups()))] = notes
    used: set[Path] = set()
    for path in _audio_files(root):
        match = _URMP_AUDIO.match(path.stem)
        if not match:
            continue  # mixes (AuMix_*), videos' audio and other files are not separated tracks
        abbreviation = match.group(2).lower()
        notes = notes_by_key.get((path.parent, "_".join(match.groups())))
        if notes is not None:
            used.add(notes)
        instrument = URMP_INSTRUMENTS.get(abbreviation, abbreviation)
        yield Recording(_recording_id(root, path), path, None, notes, instrument, "urmp")
    for notes in notes_by_key.values():
        if notes not in used:
            yield SkippedFile(notes, "URMP note annotation without its AuSep_*.wav track")


def _manifest_entries(manifest: object) -> list[dict]:
    """The per-recording entries of a corpus manifest, tolerant of a list or a name -> entry mapping."""
    if isinstance(manifest, dict):
        for key in ("recordings", "items", "files", "pieces"):
            if key in manifest:
                return _manifest_entries(manifest[key])
        if all(isinstance(v, dict) for v in manifest.values()):
            return [{"name": k, **v} for k, v in manifest.items()]
    if isinstance(manifest, list):
        return [e for e in manifest if isinstance(e, dict)]
    return []


def _entry_path(root: Path, entry: dict, keys: tuple[str, ...], stem: str | None, suffix: str) -> Path | None:
    for key in keys:
        if entry.get(key):
            path = Path(entry[key])
            return path if path.is_absolute() else root / path
    return root / f"{stem}{suffix}" if stem else None


def corpus(root: str | Path) -> Iterator[Recording | SkippedFile]:
    """The SoundFont corpus written by ``mididdsp corpus`` (``manifest.json`` + NAME.wav/.mid/.notes.csv).

    A missing, unreadable or corrupt ``manifest.json``, or one listing no recordings, yields one SkippedFile for
    the manifest (the whole source is skipped and reported; other sources of the same run go on)."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        problem = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
        yield SkippedFile(manifest_path, f"not a readable corpus manifest.json ({problem}); corpus source skipped")
        return
    entries = _manifest_entries(manifest)
    if not entries:
        yield SkippedFile(manifest_path, "no recordings listed (expected a 'recordings' list); corpus source skipped")
        return
    for entry in entries:
        stem = entry.get("name") or entry.get("id") or entry.get("stem")
        audio = _entry_path(root, entry, ("audio", "wav", "audio_path"), stem, ".wav")
        if audio is None:
            yield SkippedFile(manifest_path, f"manifest entry without a name or audio path: {entry}")
            continue
        stem = stem or audio.stem
        midi = _entry_path(root, entry, ("midi", "mid", "midi_path"), stem, ".mid")
        notes = _entry_path(root, entry, ("notes", "notes_csv", "notes_path"), stem, ".notes.csv")
        instrument = entry.get("instrument") or entry.get("instrument_name") or entry.get("program_name") or "unknown"
        if not audio.is_file():
            yield SkippedFile(audio, "listed in the corpus manifest but missing")
            continue
        yield Recording(f"{root.name}/{stem}", audio, midi if midi and midi.is_file() else None,
                        notes if notes and notes.is_file() else None, str(instrument), "corpus")


def parse_source(spec: str) -> SourceSpec:
    """``audio:DIR[:INSTRUMENT]``, ``pairs:DIR[:INSTRUMENT]``, ``urmp:DIR``, ``corpus:DIR`` or a bare path
    (kind detected, see :func:`detect_kind`). Raises MididdspError for a missing path."""
    kind, instrument = None, None
    head, sep, rest = spec.partition(":")
    if sep and head in SOURCE_KINDS:
        kind, path_text = head, rest
        if kind in ("audio", "pairs") and not Path(path_text).exists() and ":" in path_text:
            path_text, instrument = path_text.rsplit(":", 1)
    else:
        path_text = spec
    path = Path(path_text).expanduser()
    if not path.exists():
        raise MididdspError(f"source {spec!r}: {path} does not exist (expected a folder or an audio file)")
    if kind is None:
        kind = detect_kind(path)
    if kind in ("urmp", "corpus", "pairs") and not path.is_dir():
        raise MididdspError(f"source {spec!r}: {kind} sources need a folder, got the file {path}")
    return SourceSpec(kind, path, instrument or None)


def detect_kind(path: Path) -> str:
    """manifest.json -> corpus; Notes_*.txt -> urmp; a .mid beside an audio file -> pairs; else audio."""
    if path.is_file():
        return "audio"
    if (path / "manifest.json").is_file():
        return "corpus"
    if next(path.rglob("Notes_*.txt"), None) is not None:
        return "urmp"
    if any(_midi_beside(p) is not None for p in _audio_files(path)):
        return "pairs"
    return "audio"


def iter_source(spec: SourceSpec | str) -> Iterator[Recording | SkippedFile]:
    """All recordings (and skipped files) of one source."""
    if isinstance(spec, str):
        spec = parse_source(spec)
    if spec.kind == "audio":
        yield from audio_folder(spec.path, spec.instrument)
    elif spec.kind == "pairs":
        yield from audio_midi_pairs(spec.path, spec.instrument)
    elif spec.kind == "urmp":
        yield from urmp(spec.path)
    elif spec.kind == "corpus":
        yield from corpus(spec.path)
    else:
        raise MididdspError(f"unknown source kind {spec.kind!r} (expected one of {', '.join(SOURCE_KINDS)})")


# --- note annotations -------------------------------------------------------------------------------------------

def _hz_to_midi_number(frequency_hz: float) -> int:
    return int(round(69.0 + 12.0 * math.log2(frequency_hz / 440.0)))


def read_urmp_notes(path: str | Path) -> list:
    """URMP ``Notes_*.txt`` (``onset_s frequency_hz duration_s`` per line) -> list of score.Note with
    pitch = round(hz_to_midi(frequency)) and velocity URMP_VELOCITY."""
    from mididdsp.score import Note

    path = Path(path)
    notes = []
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            onset, frequency, duration = (float(v) for v in fields[:3])
        except ValueError:
            raise InputFileError(f"{path}:{line_number}: expected 'onset_s frequency_hz duration_s', "
                                 f"got {line.strip()!r}") from None
        if frequency <= 0 or duration <= 0 or onset < 0:
            raise InputFileError(f"{path}:{line_number}: expected onset >= 0, frequency > 0 and duration > 0")
        notes.append(Note(onset, onset + duration, _hz_to_midi_number(frequency), URMP_VELOCITY))
    return notes


def read_notes_csv(path: str | Path) -> list:
    """A ``*.notes.csv`` with a header naming start/end (or onset/offset, or start + duration), pitch, velocity
    (seconds, MIDI numbers) -> list of score.Note."""
    from mididdsp.score import Note

    path = Path(path)
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    notes = []
    for row_number, row in enumerate(rows, 2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        try:
            start = float(row.get("start") or row.get("start_s") or row.get("onset") or row.get("onset_s"))
            end_text = row.get("end") or row.get("end_s") or row.get("offset") or row.get("offset_s")
            end = float(end_text) if end_text else start + float(row.get("duration") or row.get("duration_s"))
            pitch = int(round(float(row["pitch"])))
            velocity = int(round(float(row.get("velocity") or 100)))
        except (TypeError, ValueError, KeyError):
            raise InputFileError(f"{path}:{row_number}: expected columns start,end,pitch,velocity") from None
        notes.append(Note(start, end, pitch, velocity))
    return notes


def read_notes(path: str | Path) -> list:
    """Note annotation file -> list of score.Note (URMP .txt or corpus .csv, by extension)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_notes_csv(path)
    return read_urmp_notes(path)
