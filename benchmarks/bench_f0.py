"""Speed and accuracy of mididdsp.pitch.compute_f0 at 250 Hz frames, against naive per-frame CREPE in the same run.

    python benchmarks/bench_f0.py [--seconds 20] [--runs 5]

Signal: a harmonic tone with 6 Hz, +-50 cent vibrato around 330 Hz (f0 known exactly at every sample).
Rows (all CREPE 'tiny', 2 torch threads, median wall time over --runs, calls interleaved):
  * mididdsp default       CREPE at 50 Hz + PCHIP to 250 Hz, deterministic Viterbi + local weighted mean
  * mididdsp every frame   the same decoding with CREPE on every 250 Hz frame (accuracy reference)
  * torchcrepe naive       torchcrepe.predict(hop_length=64, decoder=argmax): CREPE on every 250 Hz frame,
                           torchcrepe's own (dithered) decoding; the speed reference ("ratio" column)
Errors are in cents against the true f0 at each frame centre, over frames more than 64 ms from the ends.
The machine is shared: compare ratios within one run, not seconds between runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mididdsp.pitch import _import_torchcrepe, compute_f0, refine_f0  # noqa: E402

SR = 16000
HOP = 64


def vibrato_tone(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic tone (8 harmonics, 1/k) with 6 Hz +-50 cent vibrato; returns (audio [n], true f0 per sample [n])."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 330.0 * 2 ** (50 / 1200 * np.sin(2 * np.pi * 6 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    audio = sum(np.sin(k * phase) / k for k in range(1, 9))
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32), f0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torchcrepe = _import_torchcrepe()
    audio, f0_true = vibrato_tone(args.seconds)
    audio_t = torch.from_numpy(audio)[None]

    def naive() -> np.ndarray:
        with torch.inference_mode():
            return torchcrepe.predict(audio_t, SR, hop_length=HOP, model="tiny",
                                      decoder=torchcrepe.decode.argmax, batch_size=512)[0].numpy()

    methods = {
        "mididdsp default (CREPE 50 Hz + PCHIP)": lambda: compute_f0(audio)[0].numpy(),
        "mididdsp, CREPE every 250 Hz frame": lambda: compute_f0(audio, crepe_frame_rate=250)[0].numpy(),
        "mididdsp default + refine_f0 (as `extract`)": lambda: refine_f0(audio, compute_f0(audio)[0]).numpy(),
        "torchcrepe naive (hop 64, argmax)": naive,
    }
    coarse = compute_f0(audio)[0]
    methods["refine_f0 alone, on the default's f0"] = lambda: refine_f0(audio, coarse).numpy()
    times: dict[str, list[float]] = {name: [] for name in methods}
    outputs = {name: fn() for name, fn in methods.items()}  # warm-up: imports, weights, caches
    for _ in range(args.runs):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    reference = statistics.median(times["torchcrepe naive (hop 64, argmax)"])
    print(f"f0 benchmark: {args.seconds:g} s vibrato tone (330 Hz, 6 Hz +-50 c), CREPE tiny, 2 threads, "
          f"median of {args.runs} runs; shared machine, compare ratios within this run")
    print("| method | seconds | x real time | speed vs naive | median abs err (c) | rms err (c) | corr |")
    print("|---|---|---|---|---|---|---|")
    edge = 1024 // HOP  # frames whose CREPE window reaches past the signal's ends
    for name, f0 in outputs.items():
        n = len(f0)
        truth = f0_true[np.minimum(np.arange(n) * HOP, len(f0_true) - 1)]
        err = 1200 * np.log2(f0[edge:n - edge] / truth[edge:n - edge])
        corr = np.corrcoef(f0[edge:n - edge], truth[edge:n - edge])[0, 1]
        seconds = statistics.median(times[name])
        print(f"| {name} | {seconds:.3f} | {args.seconds / seconds:.1f} | {reference / seconds:.2f} | "
              f"{np.median(np.abs(err)):.2f} | {np.sqrt(np.mean(err ** 2)):.2f} | {corr:.4f} |")


if __name__ == "__main__":
    main()
