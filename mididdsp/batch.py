"""Many MIDI files in one job: the work list, the report, resume; the engines that render them are
:mod:`mididdsp.batch_engines`.

    mididdsp render a.mid b.mid songs/ -o out/ [--format flac] [--workers N] [--overwrite] [--engine ray]

Python::

    rows = mididdsp.render_many(["songs/"], "out/", seed=0, workers=2)   # the report's rows, as dicts

Each input is rendered by :func:`mididdsp.render_command.render_score`, the code path of a single ``mididdsp
render``, so a file comes out with the same bits as ``mididdsp render FILE -o OUT`` with the same options (WAV and
FLAC; an OGG file's stream serial number is drawn at random by libsndfile, so two OGG renders differ in those header
bytes even one file alone, while their decoded samples are equal). A worker loads the model once and renders file
after file on one thread (the render's bits do not depend on the thread count).

The driver (this process) reads each MIDI file, hands its bytes to a worker, gets the encoded outputs back and
writes them: the workers never touch the output folder, so the same code serves processes on this machine and
Ray workers on machines that share no disk, and one process owns resume and the report:

* Outputs are written atomically (a temporary name, then a rename; the mix last), so a file whose mix exists is
  finished: a re-run skips it (``skipped``) unless ``overwrite``. Temporary files a killed run left are removed.
* ``OUT/render-report.csv`` (plain CSV, :data:`REPORT_COLUMNS`) gets a row per input as it finishes, and is
  rewritten in input order at the end; a skipped file keeps the audio seconds and instruments of the run that
  made it. A bad file is a ``failed`` row with its one-line reason, and the batch goes on.
* A worker process that dies (killed, out of memory) is replaced and its files are tried again, up to
  :data:`MAX_ATTEMPTS` times each; a file that kills every worker it meets is then a ``failed`` row.

Engines (:mod:`mididdsp.batch_engines`) yield ``(job, outcome)`` pairs for the jobs they are given: local worker
processes with a pipe each (or this process for one worker), or Ray actors holding the model (``import ray``
happens only there).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from mididdsp.errors import MididdspError

MIDI_SUFFIXES = (".mid", ".midi")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")  # what -o must not end with in a batch
REPORT_NAME = "render-report.csv"
REPORT_COLUMNS = ("input", "output", "status", "audio_seconds", "work_seconds", "instruments", "error", "messages")
MAX_ATTEMPTS = 3          # tries of a file whose worker process died under it (a failure of the render is final)
IN_FLIGHT_PER_WORKER = 2  # files handed to each Ray actor ahead: it never waits, and a crash re-queues few
CLOSE_TIMEOUT_S = 30.0    # the Ray actors' clean-up at a batch's end


@dataclasses.dataclass(frozen=True)
class Job:
    """One input: ``input`` the MIDI file as given or found, ``relative`` its outputs' path under the output
    folder(s) without suffix (``a/b`` for ``DIR/a/b.mid``; the name for a file given on its own)."""

    input: str
    relative: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a worker needs besides the job: the model directory, the render options, the output format and
    whether stems and expression tables are wanted."""

    model: str | None
    options: Any          # mididdsp.render_command.RenderOptions (imported lazily: this module stays light)
    format: str = "wav"
    stems: bool = False
    expression: bool = False
    scratch: str | None = None  # where a worker makes its per-file temporary folder (None: the system's)


@dataclasses.dataclass
class Outcome:
    """A worker's answer for one job: the report fields it knows and the files to write, ``{kind: [(name,
    bytes)]}`` with kind ``mix`` (name ""), ``stems`` (track file names) or ``expression`` (name "")."""

    status: str
    audio_seconds: float = 0.0
    work_seconds: float = 0.0
    instruments: str = ""
    error: str = ""
    messages: str = ""
    files: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the work list
def find_inputs(paths: Iterable[str | os.PathLike]) -> list[Job]:
    """The jobs for files and folders (searched recursively for .mid/.midi, in sorted order). MididdspError for a
    path that does not exist, a folder without MIDI files, or two inputs that would write the same output."""
    jobs: list[Job] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
            if not found:
                raise MididdspError(f"{path}: no .mid or .midi files in this folder")
            jobs += [Job(str(p), p.relative_to(path).with_suffix("").as_posix()) for p in found]
        elif path.exists():
            jobs.append(Job(str(path), path.with_suffix("").name))
        else:
            raise MididdspError(f"{path}: no such MIDI file or folder")
    seen: dict[str, str] = {}
    for job in jobs:
        if job.relative in seen:
            raise MididdspError(f"{seen[job.relative]} and {job.input} would both write {job.relative}.*: give "
                                f"their folder instead, or render them into different output folders")
        seen[job.relative] = job.input
    return jobs


def output_paths(job: Job, out_dir: Path, settings: Settings, stems_dir: Path | None,
                 expression_dir: Path | None) -> dict[str, Path]:
    """Where a job's files go: ``mix`` -> OUT/a/b.wav, ``stems`` -> STEMS/a/b/, ``expression`` -> EXPR/a/b.csv."""
    paths = {"mix": out_dir / f"{job.relative}.{settings.format}"}
    if stems_dir is not None:
        paths["stems"] = stems_dir / job.relative
    if expression_dir is not None:
        paths["expression"] = expression_dir / f"{job.relative}.csv"
    return paths


# ------------------------------------------------------------------------------------------------ the worker
def render_job(model, job: Job, data: bytes | None, settings: Settings) -> Outcome:
    """Render one MIDI file (``data``: its bytes; None when it could not be read) with ``model`` into a private
    temporary folder and return the encoded files. Every error becomes a ``failed`` outcome with one line."""
    import tempfile

    from mididdsp.render_command import read_score, render_score

    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, \
            tempfile.TemporaryDirectory(prefix="mididdsp-", dir=settings.scratch) as folder:
        warnings.simplefilter("always")
        try:
            if data is None:
                raise MididdspError(f"{job.input}: could not be read")
            score = read_score(job.input, settings.options, data)
            mix = Path(folder) / f"mix.{settings.format}"
            stems = Path(folder) / "stems" if settings.stems else None
            table = Path(folder) / "expression.csv" if settings.expression else None
            done = render_score(model, score, mix, settings.options, stems, table)
        except MididdspError as error:
            message = str(error) if str(error).startswith(job.input) else f"{job.input}: {error}"
            return Outcome("failed", work_seconds=time.perf_counter() - started, error=_one_line(message))
        except Exception as error:  # noqa: BLE001 - a bug on one file must not stop the other 175 999
            return Outcome("failed", work_seconds=time.perf_counter() - started,
                           error=_one_line(f"{job.input}: {type(error).__name__}: {error} (a bug; please report "
                                           f"the MIDI file)"))
        files = {"mix": [("", mix.read_bytes())]}
        if stems is not None:
            files["stems"] = [(p.name, p.read_bytes()) for p in sorted(stems.iterdir())] if stems.is_dir() else []
        if table is not None:
            files["expression"] = [("", table.read_bytes())]
    instruments = ";".join(f"{track}={name}" for track, name in enumerate(done.instruments) if name)
    messages = [*done.messages, *(str(w.message) for w in caught)]
    return Outcome("ok", done.seconds, time.perf_counter() - started, instruments, "",
                   _one_line(" | ".join(messages)), files)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------ the driver
def render_many(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *, model: str | None = None,
                format: str = "wav", workers: int | None = None, engine: str = "local", address: str | None = None,
                overwrite: bool = False, stems: str | os.PathLike | None = None,
                expression_out: str | os.PathLike | None = None, progress: bool = False,
                **options: Any) -> list[dict]:
    """Render every MIDI file of ``inputs`` (files, or folders searched recursively) into ``out_dir``; returns the
    report's rows (dicts with :data:`REPORT_COLUMNS`, in input order), also written to ``OUT/render-report.csv``.

    ``options`` are those of one render (``instrument``, ``track_instruments`` {track: name}, ``seed``,
    ``temperature``, ``transpose``, ``tempo_scale``, ``reverb``, ``sample_rate``), the same for every file.
    ``workers``: processes (default: the cores) or, with ``engine="ray"``, actors (default: the cluster's CPUs).
    ``stems`` / ``expression_out``: folders for each file's stems (``STEMS/a/b/track_00.wav``) and expression
    table (``EXPR/a/b.csv``). Existing outputs are skipped unless ``overwrite``. MididdspError for bad options or
    inputs that cannot be listed; a file that cannot be rendered is a ``failed`` row."""
    from mididdsp.render_command import RenderOptions

    if format not in ("wav", "flac", "ogg"):
        raise MididdspError(f"format {format!r}: expected wav, flac or ogg")
    if engine not in ("local", "ray"):
        raise MididdspError(f"engine {engine!r}: expected local or ray")
    if workers is not None and workers < 1:
        raise MididdspError(f"--workers {workers}: expected at least 1")
    per_track = options.pop("track_instruments", None) or {}
    render_options = RenderOptions(track_instruments=tuple(sorted((int(k), v) for k, v in per_track.items())),
                                   **options).check()
    jobs = find_inputs(inputs)
    _check_model(model, render_options)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MididdspError(f"{out_dir}: exists and is a file; with several inputs -o names a folder")
    if not out_dir.is_dir() and out_dir.suffix.lower() in AUDIO_SUFFIXES:  # a folder "song.wav" is a typo's result
        raise MididdspError(f"-o {out_dir}: with several inputs or a folder, -o names a folder, not an audio file "
                            f"(e.g. -o {out_dir.with_suffix('')}; --format {format} sets the files' format)")
    stems_dir = Path(stems) if stems is not None else None
    expression_dir = Path(expression_out) if expression_out is not None else None
    if expression_dir is not None and expression_dir.suffix.lower() in (".csv", ".json"):
        raise MididdspError(f"--expression-out {expression_dir}: with several inputs, expected a folder (one table "
                            f"per file)")
    settings = Settings(None if model is None else str(model), render_options, format, stems_dir is not None,
                        expression_dir is not None)
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, stems_dir, expression_dir):
        if folder is not None:
            _remove_temp_files(folder)
    report_path = out_dir / REPORT_NAME
    earlier = {row.get("output"): row for row in read_report(report_path)}
    paths = {job: output_paths(job, out_dir, settings, stems_dir, expression_dir) for job in jobs}
    rows: dict[Job, dict] = {}
    pending = []
    for job in jobs:
        if not overwrite and paths[job]["mix"].is_file():
            before = earlier.get(str(paths[job]["mix"]), {})
            rows[job] = _row(job, paths[job]["mix"], Outcome("skipped", _number(before.get("audio_seconds")), 0.0,
                                                              before.get("instruments", ""), "",
                                                              before.get("messages", "")))
        else:
            pending.append(job)
    bar = _progress(len(jobs), len(rows), progress)
    try:
        _render_pending(pending, rows, paths, settings, engine, workers, address, report_path, bar)
    finally:  # closed before any message after it (an interrupted batch's "interrupted" on a line of its own)
        if bar is not None:
            bar.close()
    ordered = [rows[job] for job in jobs]
    from mididdsp.fileio import atomic_open

    with atomic_open(report_path, "w", newline="", encoding="utf-8") as report:
        writer = csv.DictWriter(report, REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in ordered)
    return ordered


def _render_pending(pending: list[Job], rows: dict, paths: dict, settings: Settings, engine: str,
                    workers: int | None, address: str | None, report_path: Path, bar) -> None:
    """Render the ``pending`` jobs on ``engine``, writing each one's outputs and its report row as it comes
    (``rows``, keyed by job, holds the skipped ones already and receives the rest)."""
    with open(report_path, "w", newline="", encoding="utf-8") as report:  # rows as they come; sorted at the end
        writer = csv.DictWriter(report, REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in rows.values())
        report.flush()
        if not pending:
            return
        # largest files first (their size roughly follows their notes, so their work): a long file dealt last
        # leaves the other workers idle while it renders; the report is in input order all the same
        pending.sort(key=_input_bytes, reverse=True)
        results = _engine(pending, settings, engine, workers, address)
        failed = 0
        try:
            for job, outcome in results:
                if outcome.status == "ok":
                    _write_outputs(outcome.files, paths[job])
                rows[job] = _row(job, paths[job]["mix"], outcome)
                writer.writerow(_csv_row(rows[job]))
                report.flush()
                failed += outcome.status == "failed"
                if bar is not None:
                    if outcome.status == "failed":
                        bar.write(f"failed: {outcome.error}", file=sys.stderr)
                    bar.set_postfix_str(f"failed {failed}", refresh=False)
                    bar.update(1)
        finally:  # an interrupt or an error here: the engine stops its workers now, not when collected
            results.close()


def _engine(jobs: list[Job], settings: Settings, engine: str, workers: int | None,
            address: str | None) -> Iterator[tuple[Job, Outcome]]:
    """The ``(job, outcome)`` stream of ``engine`` over ``jobs``: Ray's, or local processes (default: one per core
    this process may use; more than that is a warning): :mod:`mididdsp.batch_engines`."""
    from mididdsp import batch_engines

    if engine == "ray":
        return batch_engines.ray_engine(jobs, settings, workers, address)
    cores = available_cores()
    if workers is not None and workers > cores:
        warnings.warn(f"--workers {workers} on {cores} cores: each worker holds a model (about 0.5 GB) and renders "
                      f"on one core; more workers than cores only adds memory", stacklevel=3)
    return batch_engines.local_engine(jobs, settings, min(workers or cores, len(jobs)))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as ``taskset`` or a container's cpuset sets it; all of
    the machine's where the system does not say): the default number of local workers."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _input_bytes(job: Job) -> int:
    try:
        return os.path.getsize(job.input)
    except OSError:  # unreadable: its failed row comes from the worker, whenever it is dealt
        return 0


def _check_model(model: str | None, options) -> None:
    """Up front, in the driver: the model directory exists, and instrument names given are the model's (else every
    file would fail with the same message). Loading the model costs a second or two, so only when names are given."""
    from mididdsp.render import PRETRAINED_MIDI, load_model

    directory = Path(model) if model is not None else PRETRAINED_MIDI
    if options.instrument is not None or options.track_instruments:
        loaded = load_model(directory)
        for name in [options.instrument, *(name for _, name in options.track_instruments)]:
            if name is not None:
                loaded.check_instrument(name)
    elif not all((directory / part).is_dir() for part in ("generator", "prior")):
        load_model(directory)  # raises the ModelError of a single render


def _write_outputs(files: dict, paths: dict[str, Path]) -> None:
    """A job's files, each atomically; the mix last, so that an existing mix means a finished file."""
    from mididdsp.fileio import atomic_open

    for name, data in files.get("stems", []):
        with atomic_open(paths["stems"] / name, "wb") as file:
            file.write(data)
    for _, data in files.get("expression", []):
        with atomic_open(paths["expression"], "wb") as file:
            file.write(data)
    for _, data in files["mix"]:
        with atomic_open(paths["mix"], "wb") as file:
            file.write(data)


def _remove_temp_files(folder: Path) -> None:
    from mididdsp.fileio import remove_temp_files

    if folder.is_dir():
        for directory, _, _ in os.walk(folder):
            remove_temp_files(directory)


def _row(job: Job, output: Path, outcome: Outcome) -> dict:
    return {"input": job.input, "output": str(output), "status": outcome.status,
            "audio_seconds": outcome.audio_seconds, "work_seconds": outcome.work_seconds,
            "instruments": outcome.instruments, "error": outcome.error, "messages": outcome.messages}


def _csv_row(row: dict) -> dict:
    return {**row, "audio_seconds": f"{row['audio_seconds']:.3f}", "work_seconds": f"{row['work_seconds']:.3f}"}


def _number(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def read_report(path: str | os.PathLike) -> list[dict]:
    """The rows of a report (a killed run's too: a half-written last line is dropped); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8", errors="replace") as file:
        return [row for row in csv.DictReader(file) if row.get("status") in ("ok", "failed", "skipped")
                and None not in row]


def _progress(total: int, done: int, enabled: bool):
    """A tqdm bar on stderr (files done, failures, ETA); in a log (not a terminal) a line every 30 s."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="file", desc="render", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0, postfix="failed 0")


# ------------------------------------------------------------------------------------------------ the command
def run(args: argparse.Namespace) -> int:
    """``mididdsp render`` with several inputs or a folder (see :func:`mididdsp.render_command.is_batch`)."""
    from mididdsp.render_command import _parse_track_instruments

    if args.expression_in:
        raise MididdspError("--expression-in plays one table into one MIDI file; render several files without it, "
                            "or each with its own table")
    if args.address is not None and args.engine != "ray":
        raise MididdspError("--address names a Ray cluster: use it with --engine ray")
    rows = render_many(args.midi, args.output, model=args.model, format=args.format, workers=args.workers,
                       engine=args.engine, address=args.address, overwrite=args.overwrite, stems=args.stems,
                       expression_out=args.expression_out, progress=not args.quiet, instrument=args.instrument,
                       track_instruments=_parse_track_instruments(args.track_instrument), seed=args.seed,
                       temperature=args.temperature, transpose=args.transpose, tempo_scale=args.tempo_scale,
                       reverb=args.reverb, sample_rate=args.sample_rate)
    counts = {status: sum(row["status"] == status for row in rows) for status in ("ok", "skipped", "failed")}
    if not args.quiet:
        print(f"{len(rows)} files: {counts['ok']} rendered, {counts['skipped']} skipped (done before), "
              f"{counts['failed']} failed; report: {Path(args.output) / REPORT_NAME}", file=sys.stderr)
    return 1 if counts["failed"] else 0
