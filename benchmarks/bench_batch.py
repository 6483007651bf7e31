"""A folder of 50 MIDI files rendered as one batch, against FluidSynth over the same files (issue 22, section 3).

* The folder: 20 Bach chorales (music21 corpus, four parts each, played by a string quartet, woodwinds or brass, at
  60-100 quarter notes a minute) and 30 files of generated melodies (mididdsp.datasets.melodies: one to three
  tracks of 10-120 s, instruments drawn from the model's thirteen and from families it maps, e.g. piano).
* Whole processes, in the same run, interleaved, medians of ``--repeats``: ``mididdsp render DIR -o OUT
  --workers 2``; the same with ``--workers 1``; FluidSynth + FluidR3_GM over the same files two at a time
  (``xargs -P 2``, a WAV each at 16 kHz, every call under ``timeout``). Ratios: ours (2 workers) / FluidSynth
  (target <= 1.0) and 1 worker / 2 workers (target >= 1.7).
* Files per core-hour, and what bounds it: the per-file work of one worker profiled in a fresh process (MIDI
  parse, prior, generator, synthesizer, reverb, mix, writing), its start-up (imports, model load) and its peak
  resident memory.
* ``--baseline-path DIR`` (a checkout of the code before a change, e.g. ``git archive main | tar -x -C DIR``) also
  times ``--workers 2`` with that package, interleaved with the rest, so before / after come from one run.
Run: ``python benchmarks/bench_batch.py [--repeats 2] [--baseline-path DIR]`` (needs the shipped MIDI model and
FluidSynth).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_render import melody_track  # noqa: E402
from common import table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
ENSEMBLES = {"string quartet": (40, 41, 42, 43), "woodwinds": (73, 68, 71, 70), "brass": (56, 60, 57, 58)}
# (General MIDI program, lowest pitch) for generated melodies: the model's instruments and a few mapped families
MELODY_VOICES = [(40, 62), (73, 72), (42, 45), (56, 60), (71, 58), (68, 64), (60, 50), (57, 48), (0, 60),
                 (24, 55), (65, 58), (48, 60)]
FILES_CHORALES, FILES_MELODIES = 20, 30


def make_folder(folder: Path, seed: int = 0) -> tuple[Path, float]:
    """The 50 files in ``folder/chorales`` and ``folder/melodies``; returns (folder, total seconds of music)."""
    from mididdsp.datasets.melodies import bach_chorale_names, chorale_voices
    from mididdsp.score import Note, Score, Track

    rng = np.random.default_rng(seed)
    total = 0.0
    names = bach_chorale_names()
    for index in range(FILES_CHORALES):
        ensemble = list(ENSEMBLES)[index % len(ENSEMBLES)]
        voices = chorale_voices(names[index * 7], tempo_qpm=float(rng.uniform(60, 100)))
        tracks = [Track(f"{ensemble} {part}", program, False,
                        [Note(s, e, p, int(rng.integers(60, 105))) for s, e, p in melody.notes])
                  for part, (program, melody) in enumerate(zip(ENSEMBLES[ensemble], voices))]
        end = max(n.end for t in tracks for n in t.notes)
        path = folder / "chorales" / f"chorale{index:02d}.mid"
        path.parent.mkdir(parents=True, exist_ok=True)
        Score(tracks, end).write_midi(path)
        total += end
    for index in range(FILES_MELODIES):
        seconds = float(rng.uniform(10, 120))
        count = int(rng.integers(1, 4))
        picks = rng.choice(len(MELODY_VOICES), size=count, replace=False)
        tracks = [melody_track(seconds, 1000 * index + k, MELODY_VOICES[p][0], MELODY_VOICES[p][1], f"melody {k}",
                               rest_s=float(rng.uniform(0.3, 2.0))) for k, p in enumerate(picks)]
        end = max(n.end for t in tracks for n in t.notes)
        path = folder / "melodies" / f"melody{index:02d}.mid"
        path.parent.mkdir(parents=True, exist_ok=True)
        Score(tracks, end).write_midi(path)
        total += end
    return folder, total


def wall(command: list[str] | str, shell: bool = False, root: Path = ROOT) -> float:
    """Seconds of ``command`` run from ``root`` with that package first on the path (``python -m`` puts the
    working directory first)."""
    env = ENV if root == ROOT else {**ENV, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=root)
    return time.perf_counter() - start


def fluidsynth_command(folder: Path, out: Path) -> str:
    """Every file through FluidSynth + FluidR3, two at a time, each call under a timeout (a FluidSynth quirk can
    render without end)."""
    from mididdsp.datasets.corpus import check_fluidsynth

    fluidsynth, soundfont = check_fluidsynth()
    return (f"find {folder} -name '*.mid' -print0 | xargs -0 -P 2 -I{{}} sh -c "
            f"'timeout 300 {fluidsynth} -ni -q -r 16000 -F {out}/$(basename {{}} .mid).wav {soundfont} {{}}'")


def profile(folder: Path) -> dict:
    """One worker's work, in this (fresh) process: start-up, then per stage over every file, and peak memory. The
    process keeps freed memory as a worker does (mididdsp._malloc)."""
    started = time.perf_counter()
    from mididdsp._malloc import retain_freed_memory

    retain_freed_memory()
    import mididdsp
    from mididdsp.audio import save_audio
    from mididdsp.parallel import set_threads
    from mididdsp.render_command import RenderOptions, read_score

    set_threads(1)  # a worker's: one core
    imports = time.perf_counter() - started
    started = time.perf_counter()
    model = mididdsp.load_model()
    stages = {"start-up: imports": imports, "start-up: model load": time.perf_counter() - started}
    for name in ("MIDI parse", "prior", "generator", "synthesizer", "reverb", "mix", "writing"):
        stages[name] = 0.0
    audio_seconds = voice_seconds = 0.0
    with tempfile.TemporaryDirectory() as out:
        for midi in sorted(folder.rglob("*.mid")):
            started = time.perf_counter()
            score = read_score(midi, RenderOptions())
            stages["MIDI parse"] += time.perf_counter() - started
            timings: dict = {}
            result = model.render(score, seed=0, stems=False, timings=timings)
            for name, seconds in timings.items():
                stages[name] += seconds
            started = time.perf_counter()
            save_audio(Path(out) / "x.wav", result.audio, result.sample_rate)
            stages["writing"] += time.perf_counter() - started
            audio_seconds += len(result.audio) / result.sample_rate
            voice_seconds += sum(n.end - n.start for t in score.tracks if not t.is_drum for n in t.notes)
    return {"stages": stages, "audio_seconds": audio_seconds, "sounding_voice_seconds": voice_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-path", type=Path, default=None, help="checkout of the code before a change")
    parser.add_argument("--profile", default=None, help=argparse.SUPPRESS)  # the fresh process of the profile
    args = parser.parse_args()
    if args.profile:
        print(json.dumps(profile(Path(args.profile))))
        return
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        folder, music_s = make_folder(temp / "midi")
        count = len(list(folder.rglob("*.mid")))
        runs: dict[str, list[float]] = {"ours2": [], "ours1": [], "fluid": []}
        if args.baseline_path is not None:
            runs["before2"] = []
        ours = [sys.executable, "-m", "mididdsp", "render", str(folder), "--quiet", "--overwrite"]
        for repeat in range(args.repeats):
            for out in ("o2", "o1", "of", "ob"):
                shutil.rmtree(temp / out, ignore_errors=True)
                (temp / out).mkdir()
            runs["ours2"].append(wall([*ours, "-o", str(temp / "o2"), "--workers", "2"]))
            runs["fluid"].append(wall(fluidsynth_command(folder, temp / "of"), shell=True))
            runs["ours1"].append(wall([*ours, "-o", str(temp / "o1"), "--workers", "1"]))
            if args.baseline_path is not None:
                runs["before2"].append(wall([*ours, "-o", str(temp / "ob"), "--workers", "2"],
                                            root=args.baseline_path.resolve()))
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in runs.items()), flush=True)
        rows = list(__import__("csv").DictReader(open(temp / "o2" / "render-report.csv")))
        failed = [row for row in rows if row["status"] != "ok"]
        profiled = json.loads(subprocess.run([sys.executable, __file__, "--profile", str(folder)], env=ENV,
                                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    ours2, ours1, fluid = (statistics.median(runs[k]) for k in ("ours2", "ours1", "fluid"))
    print(f"\n{count} MIDI files, {music_s / 60:.1f} minutes of music; {len(failed)} failed "
          f"{[row['error'] for row in failed]}")
    print(table([
        {"renderer": "mididdsp render DIR --workers 2", "seconds": f"{ours2:.1f}",
         "files per core-hour": f"{count / (2 * ours2) * 3600:.0f}"},
        {"renderer": "mididdsp render DIR --workers 1", "seconds": f"{ours1:.1f}",
         "files per core-hour": f"{count / ours1 * 3600:.0f}"},
        {"renderer": "FluidSynth + FluidR3_GM, xargs -P 2", "seconds": f"{fluid:.1f}",
         "files per core-hour": f"{count / (2 * fluid) * 3600:.0f}"}], ["renderer", "seconds", "files per core-hour"]))
    print(f"\nours (2 workers) / FluidSynth (2 at a time): {ours2 / fluid:.2f} (target <= 1.0)")
    print(f"2 workers vs 1: {ours1 / ours2:.2f}x (target >= 1.7)")
    if args.baseline_path is not None:
        before = statistics.median(runs["before2"])
        print(f"--workers 2, the code at {args.baseline_path}: {before:.1f} s ({before / fluid:.2f} of FluidSynth); "
              f"now / before {ours2 / before:.2f}")
    stages = profiled["stages"]
    work = sum(v for k, v in stages.items() if not k.startswith("start-up"))
    print(f"\none worker, in a fresh process, 1 thread: {profiled['audio_seconds'] / 60:.1f} minutes of audio, "
          f"{profiled['sounding_voice_seconds'] / 60:.1f} minutes of sounding voices; peak memory "
          f"{profiled['peak_rss_mb']:.0f} MB")
    print(table([{"stage": k, "seconds": f"{v:.2f}", "share of the per-file work": "" if k.startswith("start-up")
                  else f"{100 * v / work:.0f} %"} for k, v in stages.items()],
                ["stage", "seconds", "share of the per-file work"]))
    print(f"per-file work {work:.1f} s for {count} files: {work / count:.2f} s a file, "
          f"{profiled['audio_seconds'] / work:.0f}x real time on one core")


if __name__ == "__main__":
    main()
