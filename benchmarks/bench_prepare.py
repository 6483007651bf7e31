"""Preparation speed: 10 minutes of audio (10 x 60 s harmonic tones with vibrato) -> shards, on 2 cores.

Reports the median seconds (``--runs``, default 3, interleaved) and x real time for ``workers=2`` and, as the
reference measured in the same run, ``workers=1``. Run: ``python benchmarks/bench_prepare.py`` (about 4 minutes).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from mididdsp.audio import save_audio  # noqa: E402
from mididdsp.datasets.prepare import prepare  # noqa: E402


def make_source(folder: Path, count: int = 10, seconds: float = 60.0) -> float:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    for index in range(count):
        f0 = rng.uniform(150, 700) * 2 ** (30 / 1200 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        envelope = 0.5 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
        audio = envelope * sum(np.sin(k * phase) / k for k in range(1, 9)) * 0.2
        save_audio(folder / f"tone_{index:02d}.wav", audio.astype(np.float32))
    return count * seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / "audio"
        total = make_source(source)
        times: dict[int, list[float]] = {2: [], 1: []}
        for run in range(args.runs):
            for workers in times:  # a fresh output folder each time: nothing is reused
                start = time.perf_counter()
                prepare([f"audio:{source}:tone"], Path(temp) / f"out{workers}_{run}", workers=workers,
                        progress=False)
                times[workers].append(time.perf_counter() - start)
        rows = []
        for workers, runs in times.items():
            seconds = statistics.median(runs)
            rows.append({"case": f"prepare {total / 60:.0f} min of audio, workers={workers}",
                         "median s": f"{seconds:.1f}", "x real time": f"{total / seconds:.0f}"})
        print(f"median of {args.runs} runs")
        print(table(rows, ["case", "median s", "x real time"]))


if __name__ == "__main__":
    main()
