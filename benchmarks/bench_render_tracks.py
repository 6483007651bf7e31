"""Render cost that follows the notes (issue 26): many-track files, whole process, against FluidSynth.

* (a) Work ratio: seventeen tracks (two Bach chorales and nine generated melodies, :func:`seventeen_tracks`) played
  at once, and the same four groups one after another (about 3.5-4x the duration). Work = in-process render
  seconds (prior, generator, synthesizer, reverb, mix) of the file minus those of a one-note file, each in a fresh
  process after a warm-up render; target <= 1.5 (the same notes, so about 1).
* (b) Whole process ``python -m mididdsp render FILE -o OUT.wav --quiet`` against ``fluidsynth -ni -F OUT.wav -r 16000
  FluidR3_GM.sf2 FILE`` (each under ``timeout``), interleaved, medians of ``--repeats``: music21's
  ``midi/testPrimitive/test04.mid`` (evaluation only), the seventeen tracks at once and the 10-minute 20-track
  file below (dense: every track plays nearly all the time); target <= 2.0 (goal 1.0).
* (c) A one-track 5-minute file (as in bench_render.py): no slower than before.
* Peak resident memory of a 10-minute 20-track render (target < 2 GB).

``--baseline-path DIR`` (a checkout of the code before the change, e.g. ``git archive main | tar -x -C DIR``) times
the same commands with that package on PYTHONPATH, interleaved with ours, so before/after come from one run.
Run: ``python benchmarks/bench_render_tracks.py [--baseline-path DIR] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import table, tree_peak_pss_mb  # noqa: E402
from bench_render import melody_track  # noqa: E402  (the same generated melodies)

FLUID_TIMEOUT_S = 120
# (program, lowest pitch) of the eight generated melodies beside the chorale parts
MELODY_VOICES = [(40, 62), (73, 72), (42, 45), (56, 60), (71, 58), (68, 64), (60, 50), (57, 48)]
CHORALE_PROGRAMS = [73, 68, 41, 42, 56, 60, 57, 58]  # one per chorale part, in order (soprano .. bass)


def env_for(package_root: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(package_root)}


def test04_path() -> Path:
    import music21

    return Path(music21.__file__).parent / "midi" / "testPrimitive" / "test04.mid"


def chorale_tracks(count: int):
    """``count`` tracks from Bach chorale parts (music21 corpus: allowed for any use), each part its own track."""
    from music21 import corpus

    from mididdsp.score import Note, Track

    tracks = []
    for chorale in corpus.chorales.Iterator(numberingSystem="bwv", returnType="stream"):
        for part in chorale.parts:
            notes = [Note(float(n.offset) * 0.5, float(n.offset + n.quarterLength) * 0.5, int(n.pitch.midi), 80)
                     for n in part.flatten().notes if n.isNote]
            if notes and len(chorale.parts) == 4:
                program = CHORALE_PROGRAMS[len(tracks) % len(CHORALE_PROGRAMS)]
                tracks.append(Track(f"chorale part {len(tracks)}", program, False, notes))
            if len(tracks) == count:
                return tracks
    return tracks


def seventeen_tracks() -> list[list]:
    """Seventeen tracks in four groups: two four-part Bach chorales, five and four generated melodies (about 20 s
    each, with rests inside). Played at once they last about 22 s; group after group, about 3.5-4x that."""
    parts = chorale_tracks(8)
    melodies = [melody_track(20, 10 + i, program, low, f"melody {i}", rest_s=1.5)
                for i, (program, low) in enumerate(MELODY_VOICES + [(41, 55)])]
    return [parts[:4], parts[4:], melodies[:5], melodies[5:]]


def shifted(track, offset: float):
    from mididdsp.score import Note, Track

    return Track(track.name, track.program, False, [Note(n.start + offset, n.end + offset, n.pitch, n.velocity)
                                                    for n in track.notes])


def one_after_another(groups: list[list], gap_s: float = 0.5) -> list:
    """The same tracks, each group starting when the previous one has ended."""
    out, offset = [], 0.0
    for group in groups:
        start = min(n.start for t in group for n in t.notes)
        out += [shifted(track, offset - start) for track in group]
        offset += max(n.end for t in group for n in t.notes) - start + gap_s
    return out


def write(path: Path, tracks) -> Path:
    from mididdsp.score import Score

    Score(tracks, max(n.end for t in tracks for n in t.notes)).write_midi(path)
    return path


def twenty_tracks(folder: Path) -> Path:
    """The 10-minute 20-track file (generated melodies with 2 s rests): the memory figure's, and a dense file for
    the whole-process comparison."""
    return write(folder / "twenty.mid", [melody_track(600, 100 + i, *MELODY_VOICES[i % 8], f"t{i}", rest_s=2.0)
                                         for i in range(20)])


def wall(command: list[str], env: dict, timeout: float | None = None) -> float:
    start = time.perf_counter()
    # run from the package's own root: `python -m` and `-c` put the working directory first on sys.path
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=timeout, cwd=env["PYTHONPATH"])
    return time.perf_counter() - start


WORK_CODE = """
import json, sys, time, torch
import mididdsp
from mididdsp.score import read_midi
torch.set_num_threads(2)
model = mididdsp.load_model()
model.render(read_midi(sys.argv[1]), seed=0)  # warm-up: first-call costs (numba, caches)
score = read_midi(sys.argv[2])
start = time.perf_counter()
model.render(score, seed=0)
print(json.dumps({"seconds": time.perf_counter() - start, "package": mididdsp.__file__}))
"""


def render_work(package_root: Path, warm_up: Path, path: Path) -> float:
    """In-process seconds of ``model.render`` of ``path`` (prior, generator, synthesizer, reverb, mix), in a fresh
    process of the code at ``package_root``, after model load and a warm-up render of ``warm_up``."""
    result = subprocess.run([sys.executable, "-c", WORK_CODE, str(warm_up), str(path)], capture_output=True,
                            text=True, env=env_for(package_root), check=True, cwd=package_root)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(package_root)), out  # timed the code asked for
    return out["seconds"]


def peak_memory_mb(package_root: Path, midi: Path, out: Path) -> float:
    """Peak memory of ``mididdsp render`` as a whole process: the sum of the PSS of it and the forked copies that
    render its voices, sampled every 20 ms (:func:`common.tree_peak_pss_mb`)."""
    peak, status = tree_peak_pss_mb([sys.executable, "-m", "mididdsp", "render", str(midi), "-o", str(out),
                                     "--quiet"], env=env_for(package_root), cwd=package_root)
    assert status == 0, status
    return peak


def speed(args, codes: dict, folder: Path, fluidsynth: str, soundfont) -> None:
    """(a) the work ratio and (b, c) whole process against FluidSynth, printed as tables."""
    groups = seventeen_tracks()
    at_once = write(folder / "at_once.mid", [track for group in groups for track in group])
    spread = write(folder / "spread.mid", one_after_another(groups))
    from mididdsp.score import Note, Track, read_midi

    one_note = write(folder / "one_note.mid", [Track("one", 40, False, [Note(0.1, 0.6, 67, 80)])])
    five = write(folder / "five.mid", [melody_track(300, 0, 40, 62, "violin")])
    durations = {p: read_midi(p).duration for p in (at_once, spread)}

    # (a) work ratio, in process; codes and files interleaved (one process per measurement)
    measured: dict = {(label, name): [] for label in codes for name in ("one", "at", "spread")}
    for _ in range(args.repeats):
        for label, root in codes.items():
            for name, midi in (("one", one_note), ("at", at_once), ("spread", spread)):
                measured[(label, name)].append(render_work(root, one_note, midi))
    work_rows = []
    for label in codes:
        base, at, sp = (statistics.median(measured[(label, name)]) for name in ("one", "at", "spread"))
        work_rows.append({"code": label, "one note s": f"{base:.2f}", "at once s": f"{at - base:.2f}",
                          "one after another s": f"{sp - base:.2f}",
                          "work ratio": f"{(sp - base) / (at - base):.2f}"})
    print(f"(a) seventeen tracks at once ({durations[at_once]:.0f} s) and one after another "
          f"({durations[spread]:.0f} s, x{durations[spread] / durations[at_once]:.2f}); in-process render "
          f"seconds minus a one-note file's, medians of {args.repeats}; target <= 1.5")
    print(table(work_rows, ["code", "one note s", "at once s", "one after another s", "work ratio"]))

    # (b, c) whole process against FluidSynth, interleaved
    files = {"test04.mid": test04_path(), "17 tracks at once": at_once, "20 tracks, 10 min": twenty_tracks(folder),
             "one track, 5 min": five}
    rows = []
    for name, midi in files.items():
        theirs = ["timeout", str(FLUID_TIMEOUT_S), fluidsynth, "-ni", "-q", "-r", "16000", "-F",
                  str(folder / "fluid.wav"), str(soundfont), str(midi)]
        ours = [sys.executable, "-m", "mididdsp", "render", str(midi), "-o", str(folder / "ours.wav"), "--quiet"]
        labels = [label for label in codes if not (name == "test04.mid" and label == "before"
                                                   and args.skip_test04_baseline)]
        times: dict[str, list[float]] = {label: [] for label in ["fluidsynth", *labels]}
        wall(theirs, env_for(ROOT))  # page cache
        for _ in range(args.repeats):
            times["fluidsynth"].append(wall(theirs, env_for(ROOT), FLUID_TIMEOUT_S + 5))
            for label in labels:
                times[label].append(wall(ours, env_for(codes[label])))
        fluid = statistics.median(times["fluidsynth"])
        row = {"file": name, "FluidSynth s": f"{fluid:.2f}"}
        for label in labels:
            value = statistics.median(times[label])
            row[f"mididdsp {label} s"] = f"{value:.2f}"
            row[f"{label} / FluidSynth"] = f"{value / fluid:.2f}"
        if "before" in labels:
            ratio = statistics.median(times["after"]) / statistics.median(times["before"])
            row["after / before"] = f"{ratio:.2f}"
        rows.append(row)
    columns = ["file", "FluidSynth s"] + [c for c in rows[-1] if c not in ("file", "FluidSynth s")]
    print(f"\n(b, c) whole process, interleaved, medians of {args.repeats} (2 threads); target <= 2.0 "
          "against FluidSynth on test04 and the 17 tracks, the 5-minute file no slower than before")
    print(table(rows, columns))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-path", type=Path, default=None, help="checkout of the code before the change")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-test04-baseline", action="store_true",
                        help="time test04 with our code only (the old render takes minutes)")
    parser.add_argument("--memory-only", action="store_true", help="only the 10-minute 20-track file's memory")
    args = parser.parse_args()
    from mididdsp.datasets.corpus import check_fluidsynth

    fluidsynth, soundfont = check_fluidsynth()
    codes = {"after": ROOT}
    if args.baseline_path is not None:
        codes = {"before": args.baseline_path.resolve(), "after": ROOT}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if not args.memory_only:
            speed(args, codes, folder, fluidsynth, soundfont)

        twenty = twenty_tracks(folder)
        memory = {label: peak_memory_mb(root, twenty, folder / "twenty.wav") for label, root in codes.items()}
        print("\npeak memory (PSS of the process and its forked copies), 10-minute 20-track MIDI: "
              + ", ".join(f"{label} {value:.0f} MB" for label, value in memory.items()) + " (target < 2048 MB)")


if __name__ == "__main__":
    main()
