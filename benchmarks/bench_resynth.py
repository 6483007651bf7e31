"""Resynthesis speed: 60 s of audio through `mididdsp resynth` with the shipped autoencoder, whole process.

    python benchmarks/bench_resynth.py [--seconds 60] [--runs 3] [--model DIR]

Input: the bundled 8 s trumpet example (mididdsp/data/example_trumpet.wav) repeated to ``--seconds`` and written
at 44.1 kHz stereo, so reading, mixing down and resampling are part of the work. Rows (2 torch threads, medians):
  * ``mididdsp resynth`` as a fresh process (Python start, imports, model load, audio read, CREPE f0 + loudness,
    network, streamed synthesis, write): what a user waits for;
  * ``resynthesize()`` in a warm process (the same work without start-up, file reading or writing);
  * f0 alone (``mididdsp.pitch.compute_f0``, CREPE tiny), the largest part of the analysis, as the reference
    measured in the same run ("share of f0" column).
Target (issue 4): the whole process at >= 5x real time on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=str(ROOT / "mididdsp" / "pretrained" / "autoencoder"))
    args = parser.parse_args()

    import soundfile
    import torch

    from mididdsp.audio import load_audio, resample
    from mididdsp.models import load_model
    from mididdsp.pitch import compute_f0
    from mididdsp.resynth import ResynthOptions, resynthesize

    torch.set_num_threads(2)
    if not (Path(args.model) / "config.yaml").is_file():
        print(f"no model at {args.model}; build it with `make model-autoencoder`")
        sys.exit(1)
    example = load_audio(ROOT / "mididdsp" / "data" / "example_trumpet.wav")
    repeats = int(np.ceil(args.seconds * 16000 / len(example)))
    audio = np.tile(example, repeats)[:int(args.seconds * 16000)]
    model = load_model(args.model)
    environment = {**os.environ, "OMP_NUM_THREADS": "2"}
    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / "input.wav"
        stereo = resample(audio, 16000, 44100)
        soundfile.write(source, np.stack([stereo, 0.8 * stereo], axis=1), 44100)
        command = [sys.executable, "-m", "mididdsp", "resynth", str(source), "-o", str(Path(temp) / "out.wav"),
                   "--model", args.model, "--instrument", "violin"]

        def whole_process() -> None:
            subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL, cwd=ROOT)

        process = median_seconds(whole_process, repeats=args.runs)
        warm = median_seconds(lambda: resynthesize(audio, model, ResynthOptions(instrument="violin")),
                              repeats=args.runs)
        f0_only = median_seconds(lambda: compute_f0(audio), repeats=args.runs)
    rows = []
    for name, seconds in (("mididdsp resynth, whole process (44.1 kHz stereo file in, wav out)", process),
                          ("resynthesize() in a warm process", warm), ("f0 alone (CREPE tiny)", f0_only)):
        rows.append({"case": f"{args.seconds:g} s: {name}", "median s": f"{seconds:.2f}",
                     "x real time": f"{args.seconds / seconds:.1f}", "share of f0": f"{f0_only / seconds:.2f}"})
    print(f"resynthesis benchmark, {args.model}, 2 threads, median of {args.runs} runs "
          f"({time.strftime('%Y-%m-%d')}); shared machine, compare ratios within this run")
    print(table(rows, ["case", "median s", "x real time", "share of f0"]))


if __name__ == "__main__":
    main()
