"""`mididdsp render` as a whole process against FluidSynth, memory and scaling (issue 12, section 5).

* Speed: the wall time of ``python -m mididdsp render FILE -o OUT.wav --quiet`` (start-up, model load, MIDI
  parse, prior, generator, synthesizer, write) beside ``fluidsynth -ni ... FluidR3_GM.sf2 FILE`` writing a WAV of
  the same 5-minute one-track MIDI, interleaved, medians of 3; the ratio; and the split of our time by stage
  (measured in-process, plus the render path's imports alone in a fresh interpreter, and a one-note file's whole
  render: the fixed start).
* Scaling: the same melody at 2.5 and 5 minutes (the ratio should be at most 2.2).
* Memory: peak resident memory of the render process for a 10-minute, 4-track file (target: 2 GB).
Run: ``python benchmarks/bench_render.py`` (needs the shipped MIDI model and FluidSynth).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}


def melody_track(seconds: float, seed: int, program: int, low: int, name: str, rest_s: float = 0.5):
    from mididdsp.datasets.melodies import generate_melody
    from mididdsp.score import Note, Track

    rng = np.random.default_rng(seed)
    notes, offset = [], 0.0
    while offset < seconds:
        melody = generate_melody(rng)
        shift = low - min(p for _, _, p in melody.notes)
        for start, end, pitch in melody.notes:
            if offset + end <= seconds:
                notes.append(Note(offset + start, offset + end, pitch + shift, int(rng.integers(60, 110))))
        offset += melody.notes[-1][1] + rest_s
    return Track(name, program, False, notes)


def write(path: Path, tracks) -> Path:
    from mididdsp.score import Score

    Score(tracks, max(n.end for t in tracks for n in t.notes)).write_midi(path)
    return path


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def peak_memory_mb(midi: Path, out: Path) -> float:
    code = ("import resource, sys\nfrom mididdsp.cli import main\n"
            f"assert main(['render', {str(midi)!r}, '-o', {str(out)!r}, '--quiet']) == 0\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def stage_split(midi: Path) -> dict:
    import mididdsp
    from mididdsp.audio import save_audio
    from mididdsp.parallel import set_threads
    from mididdsp.score import read_midi

    set_threads(2)
    out = {}
    start = time.perf_counter()
    model = mididdsp.load_model()
    out["model load"] = time.perf_counter() - start
    start = time.perf_counter()
    score = read_midi(midi)
    out["MIDI parse"] = time.perf_counter() - start
    timings: dict = {}
    result = model.render(score, seed=0, timings=timings)
    out.update(timings)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        save_audio(Path(folder) / "x.wav", result.audio, result.sample_rate)
    out["write"] = time.perf_counter() - start
    return out


def main() -> None:
    from mididdsp.datasets.corpus import check_fluidsynth

    fluidsynth, soundfont = check_fluidsynth()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        five = write(folder / "five.mid", [melody_track(300, 0, 40, 62, "violin")])
        half = write(folder / "half.mid", [melody_track(150, 0, 40, 62, "violin")])
        ours = [sys.executable, "-m", "mididdsp", "render", str(five), "-o", str(folder / "ours.wav"), "--quiet"]
        theirs = [fluidsynth, "-ni", "-q", "-r", "16000", "-F", str(folder / "fluid.wav"), str(soundfont), str(five)]
        wall(ours), wall(theirs)  # warm the page cache
        ours_s, theirs_s = [], []
        for _ in range(3):
            ours_s.append(wall(ours))
            theirs_s.append(wall(theirs))
        half_s = statistics.median(wall([*ours[:4], str(half), *ours[5:]]) for _ in range(3))
        # what a render imports: its modules, the kernels built ahead of time (or numba, where they are not built)
        imports = ("import pretty_midi, soundfile, mididdsp.render_command, mididdsp.render, mididdsp.native as n\n"
                   "if not n.built(): import numba")
        imports_s = statistics.median(wall([sys.executable, "-c", imports]) for _ in range(3))
        from mididdsp.score import Note, Track

        one = write(folder / "one.mid", [Track("one note", 40, False, [Note(0.1, 0.4, 67, 80)])])
        one_s = statistics.median(wall([*ours[:4], str(one), *ours[5:]]) for _ in range(3))
        split = stage_split(five)
        quartet = write(folder / "quartet.mid", [melody_track(600, 1, 40, 62, "violin"), melody_track(600, 2, 73, 70, "flute"),
                                                 melody_track(600, 3, 42, 45, "cello"), melody_track(600, 4, 56, 60, "trumpet")])
        memory = peak_memory_mb(quartet, folder / "quartet.wav")
    ours_m, theirs_m = statistics.median(ours_s), statistics.median(theirs_s)
    print("5-minute one-track MIDI (violin), whole process, medians of 3 (2 threads)")
    print(table([{"renderer": "mididdsp render", "seconds": f"{ours_m:.2f}", "x real time": f"{300 / ours_m:.0f}"},
                 {"renderer": "FluidSynth + FluidR3_GM", "seconds": f"{theirs_m:.2f}",
                  "x real time": f"{300 / theirs_m:.0f}"}], ["renderer", "seconds", "x real time"]))
    print(f"mididdsp / FluidSynth time: {ours_m / theirs_m:.2f}")
    rows = [{"stage": "the render path's imports (fresh interpreter)", "seconds": f"{imports_s:.2f}"},
            {"stage": "a one-note file's whole render (the fixed start)", "seconds": f"{one_s:.2f}"}]
    rows += [{"stage": name, "seconds": f"{value:.3f}"} for name, value in split.items()]
    print("\nsplit of the render (in-process, after imports)")
    print(table(rows, ["stage", "seconds"]))
    print(f"\nscaling: 2.5 min {half_s:.2f} s, 5 min {ours_m:.2f} s, ratio {ours_m / half_s:.2f} (target <= 2.2)")
    print(f"peak memory, 10-minute 4-track MIDI: {memory:.0f} MB (target <= 2048)")


if __name__ == "__main__":
    main()
