"""Does extraction keep a recording's dynamics on the scale, whatever the recording's gain? (issue 25, part 1)

    python benchmarks/eval_levels.py CORPUS_DIR [CORPUS_DIR ...] [--model DIR] [--gain-db -20] [--every N] [--json OUT]

For every recording of each corpus (``mididdsp corpus`` folders: NAME.wav + NAME.mid), the default extractor
(``mididdsp extract``: the shipped synthesis coder, mixed controls) writes a table of the recording as it is and
of a copy ``--gain-db`` quieter. Reported per corpus:

  * ends: the share of notes whose scaled ``volume`` (and ``attack_noise``) sits at 0 or 1, over all notes and
    on the worst recording (target: at most 5 %);
  * quiet copy: Pearson r of the two ``volume`` columns per recording (target >= 0.99), the largest |difference|
    of ``volume_db``, and the shift of ``level_offset_db`` (expected: the gain).

Works on tables without ``level_offset_db`` (older code: read as 0), so the same command measures before/after.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table as markdown_table  # noqa: E402


def at_ends(values: np.ndarray) -> np.ndarray:
    return (values <= 1e-6) | (values >= 1 - 1e-6)


def column(table, name: str) -> np.ndarray:
    return np.asarray(table[name], float) if name in table.columns else np.zeros(len(table))


def measure(corpus: Path, model, gain_db: float, every: int = 1) -> dict:
    from mididdsp.audio import load_audio
    from mididdsp.expression.extract import extract
    from mididdsp.score import read_midi

    manifest = json.loads((corpus / "manifest.json").read_text())
    rows = []
    for recording in manifest["recordings"][::every]:
        audio = load_audio(corpus / recording["audio"])
        score = read_midi(corpus / recording["midi"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loud = extract(audio, score, model).table
            quiet = extract(audio * np.float32(10 ** (gain_db / 20)), score, model).table
        volume, quiet_volume = column(loud, "volume"), column(quiet, "volume")
        rows.append({
            "recording": recording["name"], "notes": len(loud),
            "volume_ends": float(at_ends(volume).mean()), "attack_ends": float(at_ends(column(loud, "attack_noise")).mean()),
            "quiet_volume_ends": float(at_ends(quiet_volume).mean()),
            "quiet_r": float(np.corrcoef(volume, quiet_volume)[0, 1]) if np.ptp(volume) > 0 and np.ptp(quiet_volume) > 0
            else float("nan"),
            "quiet_max_db": float(np.abs(column(quiet, "volume_db") - column(loud, "volume_db")).max()),
            "offset_shift_db": float(np.median(column(quiet, "level_offset_db") - column(loud, "level_offset_db"))),
        })
        print(f"{recording['name']}: volume at the ends {rows[-1]['volume_ends']:.1%} (quiet copy "
              f"{rows[-1]['quiet_volume_ends']:.1%}), r {rows[-1]['quiet_r']:.3f}", file=sys.stderr)
    notes = np.array([r["notes"] for r in rows], float)

    def pooled(key: str) -> float:
        return float(np.sum(notes * np.array([r[key] for r in rows])) / notes.sum())

    return {"corpus": str(corpus), "recordings": len(rows), "notes": int(notes.sum()),
            "volume_ends": pooled("volume_ends"), "volume_ends_worst": max(r["volume_ends"] for r in rows),
            "quiet_volume_ends": pooled("quiet_volume_ends"),
            "quiet_volume_ends_worst": max(r["quiet_volume_ends"] for r in rows),
            "attack_ends": pooled("attack_ends"),
            "quiet_r_min": float(np.nanmin([r["quiet_r"] for r in rows])),
            "quiet_r_median": float(np.nanmedian([r["quiet_r"] for r in rows])),
            "quiet_max_db": max(r["quiet_max_db"] for r in rows),
            "offset_shift_db": float(np.median([r["offset_shift_db"] for r in rows])), "per_recording": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--model", default=None, help="synthesis coder (default: the shipped one)")
    parser.add_argument("--gain-db", type=float, default=-20.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--every", type=int, default=1, help="measure every N-th recording (default: all)")
    args = parser.parse_args()

    from mididdsp.models import load_model
    from mididdsp.resynth import SHIPPED_CODER

    model = load_model(args.model or SHIPPED_CODER)
    results = [measure(corpus, model, args.gain_db, args.every) for corpus in args.corpora]
    headers = ["corpus", "notes", "volume at 0 or 1: all / worst recording", f"copy {args.gain_db:+g} dB: all / worst",
               "attack noise at 0 or 1", "copy: volume r min / median", "copy: max volume_db change", "offset shift"]
    lines = [[Path(r["corpus"]).name, r["notes"], f"{r['volume_ends']:.1%} / {r['volume_ends_worst']:.1%}",
              f"{r['quiet_volume_ends']:.1%} / {r['quiet_volume_ends_worst']:.1%}", f"{r['attack_ends']:.1%}",
              f"{r['quiet_r_min']:.3f} / {r['quiet_r_median']:.3f}", f"{r['quiet_max_db']:.2f} dB",
              f"{r['offset_shift_db']:+.2f} dB"] for r in results]
    print(markdown_table([dict(zip(headers, line)) for line in lines], headers))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
