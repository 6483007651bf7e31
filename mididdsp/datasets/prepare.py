"""``mididdsp prepare``: audio (+ MIDI / note annotations) -> feature shards for training.

Per recording: audio -> 16 kHz mono (mididdsp.audio.load_audio) -> f0 + confidence (mididdsp.pitch.compute_f0)
and A-weighted loudness (mididdsp.dsp.compute_loudness); the score (MIDI via mididdsp.score.read_midi, or a
URMP / corpus note file) -> a monophonic note list -> frame-level note arrays (mididdsp.score.note_frames).
One shard per recording (format: mididdsp.datasets.shards), then ``manifest.json`` rebuilt from every valid shard
in the folder, with train/valid/test split by recording and per-instrument statistics.

Resumable: a shard whose sources (size, mtime) and settings are unchanged is not recomputed; shards are written
atomically, so a run killed at any point (even ``kill -9``) leaves only complete shards and stray temp files,
which the next run removes. Shards accumulate across runs into the same folder (several invocations can add
sources); delete the folder to start over. Two runs into the same folder at once are not supported.

Parallelism: ``--workers N`` is the number of CPU cores to use. With at least N recordings to compute it runs N
processes of one torch thread each (faster than one process with N threads, see docs); with fewer recordings
it runs fewer processes with more threads each, so one long file still uses every core.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mididdsp.datasets.sources import AUDIO_EXTENSIONS, Recording, SkippedFile, iter_source, parse_source, read_notes

# Frames at least this confident count as voiced for the pitch / loudness statistics.
VOICED_CONFIDENCE = 0.5


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="audio:DIR[:INSTRUMENT], pairs:DIR[:INSTRUMENT], urmp:DIR, corpus:DIR, or a folder "
                             "(kind detected)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (shards/ and manifest.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/valid/test split (default 0)")
    parser.add_argument("--valid", type=float, default=0.1, help="fraction of recordings for validation")
    parser.add_argument("--test", type=float, default=0.1, help="fraction of recordings for test")
    parser.add_argument("--workers", type=int, default=2, help="CPU cores to use (default 2)")
    parser.add_argument("--f0-model", default="tiny", choices=("tiny", "full"), help="CREPE model (default tiny)")
    parser.add_argument("--force", action="store_true", help="recompute shards that are already up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class PrepareReport:
    computed: list[str] = field(default_factory=list)   # recording ids computed in this run
    cached: list[str] = field(default_factory=list)     # recording ids whose shard was already up to date
    skipped: list[dict] = field(default_factory=list)   # {"path", "reason"}
    manifest: dict = field(default_factory=dict)
    seconds: float = 0.0


# --- per recording (runs in worker processes) -------------------------------------------------------------------

def _file_provenance(path: Path | None) -> dict | None:
    if path is None:
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def provenance(recording: Recording) -> dict:
    return {"audio": _file_provenance(recording.audio_path), "midi": _file_provenance(recording.midi_path),
            "notes": _file_provenance(recording.notes_path)}


def monophonic_notes(notes: list) -> list:
    """Reduce notes to one voice for the frame arrays: of notes starting together keep the highest; a note
    that starts while another sounds ends the earlier one (last-note priority, like a monophonic synth).
    Monophonic input with tiny annotation overlaps (legato) comes out with those overlaps trimmed."""
    ordered = sorted(notes, key=lambda n: (n.start, -n.pitch))
    kept: list = []
    for note in ordered:
        if note.end <= note.start:
            continue
        if kept and abs(kept[-1].start - note.start) < 1e-9:
            continue  # same start as a higher note already kept
        if kept and note.start < kept[-1].end:
            kept[-1] = type(note)(kept[-1].start, note.start, kept[-1].pitch, kept[-1].velocity)
        kept.append(note)
    return kept


def read_score_notes(recording: Recording) -> list | None:
    """The recording's notes, or None without a score: the note annotation file when there is one (URMP, and
    the corpus's exact ground truth), else all non-drum tracks of the MIDI file."""
    if recording.notes_path is not None:
        return read_notes(recording.notes_path)
    if recording.midi_path is not None:
        from mididdsp.score import read_midi

        score = read_midi(recording.midi_path)
        return [note for track in score.tracks if not track.is_drum for note in track.notes]
    return None


def compute_features(recording: Recording, f0_model: str = "tiny") -> tuple[dict, dict]:
    """Recording -> (shard arrays, meta) (see mididdsp.datasets.shards for the arrays)."""
    from mididdsp.datasets import shards as shard_io
    import numpy as np
    import torch

    from mididdsp.audio import load_audio
    from mididdsp.dsp import compute_loudness
    from mididdsp.dsp.core import FRAME_RATE, HOP_SIZE, SAMPLE_RATE, hz_to_midi, n_frames
    from mididdsp import pitch

    audio = load_audio(recording.audio_path, SAMPLE_RATE)
    frames = n_frames(audio.shape[0], HOP_SIZE)
    with torch.inference_mode():
        f0_hz, confidence = pitch.compute_f0(audio, sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE, model=f0_model)
        loudness = compute_loudness(torch.from_numpy(audio)[None], SAMPLE_RATE, FRAME_RATE)[0]
    f0_hz = np.asarray(f0_hz, np.float32).reshape(-1)
    confidence = np.asarray(confidence, np.float32).reshape(-1)
    loudness = np.asarray(loudness, np.float32).reshape(-1)
    for name, values in (("f0", f0_hz), ("confidence", confidence), ("loudness", loudness)):
        if values.shape[0] != frames:
            raise RuntimeError(f"{name} has {values.shape[0]} frames for {audio.shape[0]} samples, expected {frames}")

    notes = read_score_notes(recording)
    mono = monophonic_notes(notes) if notes else []
    n_voices = 0
    if notes:
        from mididdsp.score import split_voices

        n_voices = len(split_voices(notes))
    note_arrays = {"note_pitch": np.zeros(frames, np.float32), "note_onset": np.zeros(frames, np.uint8),
                   "note_offset": np.zeros(frames, np.uint8), "note_index": np.full(frames, -1, np.int32),
                   "note_position": np.zeros(frames, np.float32), "note_velocity": np.zeros(frames, np.float32)}
    if mono:
        from mididdsp.score import note_frames

        computed = note_frames(mono, frames, frame_rate=FRAME_RATE)
        for key in ("pitch", "onset", "offset", "note_index", "position", "velocity"):
            target = f"note_{key}" if key != "note_index" else key
            note_arrays[target] = np.asarray(computed[key]).reshape(-1)[:frames].astype(note_arrays[target].dtype)

    voiced = confidence >= VOICED_CONFIDENCE
    voiced_pitch = hz_to_midi(torch.from_numpy(f0_hz[voiced])).numpy().astype(np.float64)
    voiced_loudness = loudness[voiced].astype(np.float64)
    audio_int16, scale = shard_io.quantize_audio(audio)
    arrays = {
        "audio": audio_int16, "audio_scale": np.array(scale, np.float32),
        "f0_hz": f0_hz, "confidence": confidence, "loudness_db": loudness, **note_arrays,
        "notes": np.array([[n.start, n.end, n.pitch, n.velocity] for n in mono], np.float64).reshape(-1, 4),
        "pitch_hist": shard_io.histogram(voiced_pitch, shard_io.PITCH_RANGE, shard_io.PITCH_BIN_WIDTH),
        "loudness_hist": shard_io.histogram(voiced_loudness, shard_io.LOUDNESS_RANGE, shard_io.LOUDNESS_BIN_WIDTH),
    }
    meta = {
        "format_version": shard_io.SHARD_FORMAT_VERSION, "id": recording.id, "instrument": recording.instrument,
        "source": recording.source, "f0_model": f0_model, "sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE,
        "n_samples": int(audio.shape[0]), "n_frames": frames, "duration_s": audio.shape[0] / SAMPLE_RATE,
        "has_notes": notes is not None, "n_notes": len(mono), "n_notes_in_score": len(notes or []),
        "n_voices": n_voices, "provenance": provenance(recording),
        "stats": {"voiced_frames": int(voiced.sum()),
                  "pitch_sum": float(voiced_pitch.sum()), "pitch_sum_sq": float((voiced_pitch ** 2).sum()),
                  "loudness_sum": float(voiced_loudness.sum()),
                  "loudness_sum_sq": float((voiced_loudness ** 2).sum())},
    }
    return arrays, meta


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def process_recording(task: tuple[Recording, str, str]) -> tuple[str, str, str]:
    """Compute and write one shard. Returns ("ok", id, "") or ("skipped", audio path, reason); never raises
    for a bad file, so one file cannot stop a long run."""
    from mididdsp.datasets import shards as shard_io
    recording, f0_model, shard_path = task
    try:
        arrays, meta = compute_features(recording, f0_model)
        shard_io.write_shard(shard_path, arrays, meta)
        return "ok", recording.id, ""
    except Exception as error:  # noqa: BLE001 - any failure of one file is reported, not fatal
        reason = str(error).replace(str(recording.audio_path) + ": ", "") or type(error).__name__
        return "skipped", str(recording.audio_path), f"{type(error).__name__}: {reason}"


# --- the run ------------------------------------------------------------------------------------------------------

def _is_up_to_date(shard_path: Path, recording: Recording, f0_model: str) -> bool:
    from mididdsp.datasets import shards as shard_io
    if not shard_path.is_file():
        return False
    try:
        meta = shard_io.read_meta(shard_path)
        return (meta["id"] == recording.id and meta["f0_model"] == f0_model
                and meta["instrument"] == recording.instrument and meta["provenance"] == provenance(recording))
    except (ValueError, OSError, KeyError):
        return False


def collect_recordings(sources: list) -> tuple[list[Recording], list[dict]]:
    """Recordings of every source (spec strings or SourceSpec), duplicates of an id dropped, plus skipped files.

    A source path that does not exist is an error (a mistyped argument); a source whose files cannot be read
    (say a corrupt corpus manifest) is reported as skipped and the other sources go on."""
    from mididdsp.errors import InputFileError

    recordings: dict[str, Recording] = {}
    skipped: list[dict] = []
    for source in sources:
        spec = parse_source(source) if isinstance(source, str) else source
        try:
            for item in iter_source(spec):
                if isinstance(item, SkippedFile):
                    skipped.append({"path": str(item.path), "reason": item.reason})
                elif item.id in recordings:
                    skipped.append({"path": str(item.audio_path), "reason": f"duplicate recording id {item.id}"})
                else:
                    recordings[item.id] = item
        except (InputFileError, OSError) as error:  # the rest of this source is unusable; the run goes on
            reason = str(error).replace(f"{spec.path}: ", "") or type(error).__name__
            skipped.append({"path": str(spec.path), "reason": f"{spec.kind} source skipped: {reason}"})
    return list(recordings.values()), skipped


def prepare(sources: list, out_dir: str | Path, seed: int = 0, valid: float = 0.1, test: float = 0.1,
            workers: int = 2, f0_model: str = "tiny", force: bool = False, progress: bool = True) -> PrepareReport:
    """Prepare every recording of ``sources`` into ``out_dir`` (see module docstring); returns a report."""
    from mididdsp.datasets import shards as shard_io
    import multiprocessing

    from tqdm import tqdm

    from mididdsp.errors import MididdspError
    from mididdsp.fileio import remove_temp_files

    started = time.perf_counter()
    out_dir = Path(out_dir)
    shard_dir = out_dir / shard_io.SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_temp_files(shard_dir)
    remove_temp_files(out_dir)
    if not 0 <= valid < 1 or not 0 <= test < 1 or valid + test >= 1:
        raise MididdspError(f"--valid {valid} and --test {test}: expected fractions >= 0 that sum to less than 1")
    recordings, skipped = collect_recordings(sources)
    if not recordings and not any(shard_dir.glob(f"*{shard_io.SHARD_SUFFIX}")):
        # Nothing at all to prepare: one line, with what was skipped and why.
        why = "; ".join(f"{item['path']}: {item['reason']}" for item in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise MididdspError(f"nothing to prepare: no audio files found in {', '.join(map(str, sources))} "
                            f"(expected {', '.join(AUDIO_EXTENSIONS)} files)"
                            + (f"; skipped {why}{more}" if skipped else ""))
    report = PrepareReport(skipped=skipped)
    tasks = []
    for recording in recordings:
        shard_path = shard_dir / shard_io.shard_name(recording.id)
        if not force and _is_up_to_date(shard_path, recording, f0_model):
            report.cached.append(recording.id)
        else:
            try:
                size = recording.audio_path.stat().st_size
            except OSError:
                size = 0
            tasks.append((size, (recording, f0_model, str(shard_path))))
    tasks = [task for _, task in sorted(tasks, key=lambda t: -t[0])]  # longest first: better load balance

    cores = max(1, int(workers))
    processes = max(1, min(cores, len(tasks)))
    threads = max(1, cores // processes)
    bar = tqdm(total=len(tasks), unit="file", desc="prepare", disable=not progress or not tasks, file=sys.stderr)
    results = []
    if processes == 1:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for task in tasks:
                results.append(process_recording(task))
                bar.update()
        finally:
            torch.set_num_threads(previous_threads)
    else:
        # fork: workers start instantly and inherit the loaded modules; torch resets its thread pool after fork.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(processes, _init_worker, (threads,)) as pool:
            for result in pool.imap_unordered(process_recording, tasks, chunksize=1):
                results.append(result)
                bar.update()
    bar.close()
    for status, name, reason in results:
        if status == "ok":
            report.computed.append(name)
        else:
            report.skipped.append({"path": name, "reason": reason})
    report.manifest = shard_io.build_manifest(out_dir, seed, valid, test, report.skipped)
    report.skipped = report.manifest["skipped"]
    report.seconds = time.perf_counter() - started
    return report


def format_summary(report: PrepareReport, out_dir: Path) -> str:
    manifest = report.manifest
    totals = manifest["totals"]
    lines = [f"prepared {totals['recordings']} recordings, {totals['hours']:.3f} h of audio in {out_dir} "
             f"({len(report.computed)} computed, {len(report.cached)} up to date, {len(report.skipped)} skipped; "
             f"{report.seconds:.1f} s)"]
    lines.append("splits: " + ", ".join(f"{name} {value['recordings']} ({value['duration_s'] / 60:.1f} min)"
                                        for name, value in totals["splits"].items()))
    for instrument, stats in manifest["statistics"].items():
        pitch = stats["pitch_midi"]
        loudness = stats["loudness_db"]
        detail = (f"pitch median {pitch['percentiles']['50']:.1f}, loudness median "
                  f"{loudness['percentiles']['50']:.1f} dB" if pitch["count"] else "no voiced frames")
        lines.append(f"  {instrument}: {stats['recordings']} recordings, {stats['duration_s'] / 60:.1f} min, "
                     f"{stats['notes']} notes; {detail}")
    for item in report.skipped:
        lines.append(f"skipped {item['path']}: {item['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = prepare(args.sources, args.out, seed=args.seed, valid=args.valid, test=args.test,
                     workers=args.workers, f0_model=args.f0_model, force=args.force,
                     progress=not args.quiet)
    print(format_summary(report, args.out))
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m mididdsp.datasets.prepare
    parser = argparse.ArgumentParser(prog="mididdsp prepare")
    configure_parser(parser)
    sys.exit(run(parser.parse_args()))
