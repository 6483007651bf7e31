"""How much of a known vibrato does extraction read back? Synthetic harmonic tones through CREPE and the extractor.

    python benchmarks/eval_vibrato_tones.py [--cents 30] [--rates 4 5.5 7] [--f0 110 220 440 660 880]

Each tone lasts 2 s: a 1/k harmonic spectrum up to 7 kHz with a sinusoidal vibrato of ``--cents`` at each rate.
f0 comes from :func:`mididdsp.pitch.compute_f0` (CREPE tiny at 50 Hz + PCHIP, the default of every command, and
CREPE on every 250 Hz frame, and CREPE refined by :func:`mididdsp.pitch.refine_f0` as ``mididdsp extract`` does);
the extent from :func:`mididdsp.expression.controls.note_expression`
over the whole tone as one note (rates inside the gate: 3.5-8.5 Hz read ungated). Printed: measured extent / true extent. The same extractor on the exact f0 reads
1.00 (tests/test_expression_controls.py), so the shortfall is the pitch tracker's.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table as markdown_table  # noqa: E402

SAMPLE_RATE = 16000


def vibrato_tone(f0_hz: float, rate_hz: float, cents: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frequency = f0_hz * 2.0 ** (cents * np.sin(2 * math.pi * rate_hz * t) / 1200.0)
    phase = 2 * math.pi * np.cumsum(frequency) / SAMPLE_RATE
    harmonics = range(1, max(2, int(7000 / f0_hz)))
    return (0.1 * sum(np.sin(k * phase) / k for k in harmonics)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cents", type=float, default=30.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[4.0, 5.5, 7.0])
    parser.add_argument("--f0", type=float, nargs="+", default=[110.0, 220.0, 440.0, 660.0, 880.0])
    args = parser.parse_args(argv)

    import torch

    from mididdsp.expression.controls import note_expression
    from mididdsp.pitch import compute_f0, refine_f0

    rows = []
    for f0_hz in args.f0:
        row: dict = {"f0 (Hz)": f"{f0_hz:g}"}
        for rate in args.rates:
            audio = vibrato_tone(f0_hz, rate, args.cents)
            crepe, _ = compute_f0(audio)
            every_frame, _ = compute_f0(audio, crepe_frame_rate=250)
            for label, f0 in ((" CREPE", crepe), (" CREPE every frame", every_frame),
                              (" refined", refine_f0(audio, crepe))):
                frames = len(f0)
                note_index = torch.zeros(frames, dtype=torch.long)
                note_index[:10] = note_index[-10:] = -1  # leave out the tone's switch-on and switch-off
                pitch = torch.tensor([69.0 + 12.0 * math.log2(f0_hz / 440.0)])
                out = note_expression({"f0_hz": f0, "amplitude": torch.full((frames,), 0.1)}, note_index, pitch)
                row[f"{rate:g} Hz{label}"] = f"{out['vibrato_extent_cents'][0].item() / args.cents:.2f}"
        rows.append(row)
    print(f"\nMeasured / true vibrato extent ({args.cents:g} cents); CREPE tiny at 50 Hz + PCHIP, on every frame, "
          f"and refined\n")
    print(markdown_table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
