"""How close can a note-by-note level contour with one peak get to a recording's loudness? (issue 25's bound)

    python benchmarks/level_contour_bound.py data/heldout/sf_GMbank data/heldout/TimGM6mb [--per-instrument 1]

The expression table gives each note a level, a fluctuation and one peak position, and the generator draws a
contour with one maximum through them (a tent, or the learned unimodal shape). Issue 25 asks for the rendered
loudness contour inside notes to reach r >= 0.95 against the recording's. This script measures, on the recordings'
own A-weighted loudness (the same frames and correlation as ``eval_realism.py``; no synthesis involved), what such
contours can reach at best:

* ``flat``: each note at its mean loudness (what the per-note level alone carries);
* ``tent``: the generator's tent (``level_shape: tent``) through each note's mean, standard deviation and peak
  position, all measured from the recording;
* ``best unimodal``: the closest curve (least squares) that rises to the note's measured peak and falls after it
  (isotonic regression on either side), the upper bound of any one-peak contour with that peak, the learned shape
  included;
* ``+2 curvatures``, ``+3 shape numbers``: what more numbers per note would buy (would new table controls pay?):
  the tent with each side bent by its own power (rise ``((p - x) / p) ** a``, fall ``((x - p) / (1 - p)) ** b``,
  a and b fitted per note on a grid of 0.25 .. 8), and the same with the two sides' depths in a fitted ratio, each
  standardised to the note's mean and deviation like the tent.

The recordings' loudness is taken as the render would have to reproduce it; a render adds its own differences
(synthesizer, reverb), so the render's r sits under these figures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import isotonic_regression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_realism import note_mask, notes_only  # noqa: E402


NAMES = ("flat", "tent", "+2 curvatures", "+3 shape numbers", "best unimodal")


def note_frames(score, n_frames: int) -> list[tuple[int, int]]:
    """(first, stop) frames of every note at 250 Hz, as ``eval_realism.note_mask`` marks them."""
    spans = []
    for track in score.tracks:
        for note in track.notes:
            first, stop = int(round(note.start * 250)), min(n_frames, int(round(note.end * 250)))
            if stop > first:
                spans.append((first, stop))
    return spans


def unimodal_fit(values: np.ndarray, peak: int) -> np.ndarray:
    """Least-squares curve that does not fall up to index ``peak`` and does not rise after it."""
    rising = isotonic_regression(values[:peak + 1], increasing=True).x
    falling = isotonic_regression(values[peak:], increasing=False).x
    out = np.concatenate([rising, falling[1:]])
    out[peak] = max(rising[-1], falling[0])
    return out


def tent_fit(values: np.ndarray, peak: int) -> np.ndarray:
    """The generator's tent (peak at ``peak``, linear sides) standardised to ``values``' mean and deviation."""
    count = len(values)
    if count < 2 or values.std() == 0:
        return np.full(count, values.mean())
    position = np.arange(count) / count
    at = peak / count
    body = -np.abs(position - at) / max(at, 1 - at, 1e-3)
    if body.std() == 0:
        return np.full(count, values.mean())
    return values.mean() + values.std() * (body - body.mean()) / body.std()


CURVATURES = np.geomspace(0.25, 8.0, 7)
SIDE_SHARES = np.array([0.15, 0.3, 0.5, 0.7, 0.85])  # the rise's share of the two sides' depths


def shaped_fit(values: np.ndarray, peak: int, shares: np.ndarray) -> np.ndarray:
    """The best (least squares) of the bent tents over :data:`CURVATURES` x :data:`CURVATURES` x ``shares``,
    standardised to ``values``' mean and deviation."""
    count = len(values)
    if count < 3 or values.std() == 0:
        return np.full(count, values.mean())
    position = (np.arange(count) + 0.5) / count
    at = (peak + 0.5) / count
    left = np.clip((at - position) / at, 0, None)             # 1 at the start .. 0 at the peak
    right = np.clip((position - at) / (1 - at), 0, None)      # 0 at the peak .. 1 at the end
    a = CURVATURES[:, None, None, None]
    b = CURVATURES[None, :, None, None]
    share = shares[None, None, :, None]
    body = -(share * left ** a + (1 - share) * right ** b)    # [a, b, share, count]
    body = body - body.mean(-1, keepdims=True)
    spread = body.std(-1, keepdims=True)
    body = np.where(spread > 0, body / np.where(spread > 0, spread, 1), 0.0)
    target = (values - values.mean()) / values.std()
    # the standardised curve's best scale is its correlation with the target; the best curve has the highest
    score = (body * target).mean(-1)
    index = np.unravel_index(np.argmax(score), score.shape)
    return values.mean() + values.std() * body[index]


def contours(loudness: np.ndarray, spans: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    out = {name: loudness.copy() for name in NAMES}
    for first, stop in spans:
        values = loudness[first:stop].astype(np.float64)
        peak = int(np.argmax(values))
        out["flat"][first:stop] = values.mean()
        out["tent"][first:stop] = tent_fit(values, peak)
        out["best unimodal"][first:stop] = unimodal_fit(values, peak)
        out["+2 curvatures"][first:stop] = shaped_fit(values, peak, np.array([0.5]))
        out["+3 shape numbers"][first:stop] = shaped_fit(values, peak, SIDE_SHARES)
    return out


def main() -> int:
    import tempfile

    from mididdsp.audio import load_audio
    from mididdsp.dsp import compute_loudness
    from mididdsp.score import read_midi

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--per-instrument", type=int, default=1, help="recordings per instrument and corpus")
    args = parser.parse_args()
    rows = []
    for corpus in args.corpora:
        taken: dict[str, int] = {}
        for meta_path in sorted(p for p in corpus.glob("*.json") if p.name != "manifest.json"):
            meta = json.loads(meta_path.read_text())
            if taken.get(meta["instrument"], 0) >= args.per_instrument:
                continue
            taken[meta["instrument"]] = taken.get(meta["instrument"], 0) + 1
            audio = load_audio(corpus / meta["audio"])
            loudness = compute_loudness(torch.from_numpy(audio)[None].float())[0].numpy()
            with tempfile.TemporaryDirectory() as folder:
                notes_only(corpus / meta["midi"], Path(folder) / "notes.mid")
                score = read_midi(Path(folder) / "notes.mid")
            mask = note_mask(score, len(loudness))[:len(loudness)]
            fitted = contours(loudness, note_frames(score, len(loudness)))
            row = {"corpus": corpus.name, "instrument": meta["instrument"]}
            for name, curve in fitted.items():
                row[name] = float(np.corrcoef(curve[mask], loudness[mask])[0, 1])
            rows.append(row)
            print(f"{corpus.name} {meta['name']}: " + ", ".join(f"{k} {row[k]:.3f}" for k in fitted), file=sys.stderr)
    print("loudness r inside notes against the recording's own (mean over recordings; lowest instrument)")
    for corpus in args.corpora:
        chosen = [r for r in rows if r["corpus"] == corpus.name]
        print(f"  {corpus.name}: " + ", ".join(
            f"{name} {np.mean([r[name] for r in chosen]):.3f} (lowest {min(r[name] for r in chosen):.3f}, "
            f"{min(chosen, key=lambda r: r[name])['instrument']})" for name in NAMES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
