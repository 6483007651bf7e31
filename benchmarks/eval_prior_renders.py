"""Renders from the prior against the recordings of the same notes: are their distributions of note expression
and loudness contours the recordings'? (issue 25, "renders from the prior of held-out MIDI files")

    python benchmarks/eval_prior_renders.py data/heldout/sf_GMbank data/heldout/TimGM6mb [--per-instrument 2]
        [--model DIR] [--json runs/eval_prior_renders.json]

For each recording of a held-out corpus folder (``mididdsp corpus`` output, never trained on), its notes alone (no
CC, no bends) are rendered twice by the MIDI model:

- ``prior``: the expression sampled by the prior (seed 0, temperature 1), as ``mididdsp render`` plays a file;
- ``instrument mean``: every note given its instrument's mean expression over the training notes (the
  per-instrument-mean baseline: the best constant a prior that ignored the notes could say).

The recording and both renders then go through the same extractor (``mididdsp extract``'s default), and per
instrument the distributions are compared with the 1-D Wasserstein distance (W1, the earth mover's distance):

- each of the six scaled controls' per-note values (units of the [0, 1] scale);
- the loudness contour inside notes: each frame's A-weighted loudness minus its note's mean (dB), pooled.

Why W1: a prior is asked for the performer's spread, not for each note's draw (the corpus's performer draws several
parameters per note at random, so a note-by-note error is bounded away from 0 for any prior: docs/RESULTS.md); W1
compares the whole distributions without pairing notes, is in the control's own units, and charges a collapsed
distribution (the constant baseline) for the spread it lacks, where a note-by-note RMSE would favour it. Both
renders are measured through the extractor, as the recording is, so the extractor's own reading errors sit on
both sides. Figures are means over instruments (each instrument's recordings pooled).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_realism import fit, notes_only  # noqa: E402

CONTROLS = ("volume", "volume_fluctuation", "volume_peak_position", "vibrato", "brightness", "attack_noise")


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between the empirical distributions of samples ``a`` and ``b`` (1-D): the area between their CDFs."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))


def contour_deviations(audio: np.ndarray, score) -> np.ndarray:
    """Each inside-note frame's A-weighted loudness minus its note's mean loudness (dB), all notes pooled."""
    from mididdsp.dsp import compute_loudness

    loudness = compute_loudness(torch.from_numpy(audio)[None].float())[0].numpy()
    out = []
    for track in score.tracks:
        for note in track.notes:
            first, stop = int(round(note.start * 250)), min(int(round(note.end * 250)), len(loudness))
            if stop - first >= 5:
                segment = loudness[first:stop]
                out.append(segment - segment.mean())
    return np.concatenate(out) if out else np.zeros(0)


def training_means(midi_model, data_dir: Path) -> dict[str, np.ndarray]:
    """Per instrument name: the mean of the scaled controls and the vibrato rate over the training notes."""
    from mididdsp.datasets.teacher import ensure_teacher
    from mididdsp.expression.prior_eval import _tables, instrument_baseline
    from mididdsp.resynth import SHIPPED_CODER

    folder = ensure_teacher(data_dir, SHIPPED_CODER)
    baseline = instrument_baseline(_tables(data_dir, folder, "train", midi_model.instruments))
    return {name: np.concatenate([baseline[i]["mean"], [baseline[i]["rate_mean"]]])
            for name, i in midi_model.instruments.items() if i in baseline}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--per-instrument", type=int, default=2, help="recordings per instrument and corpus")
    parser.add_argument("--instruments", default=None, help="comma-separated (default: all)")
    parser.add_argument("--model", default=None, help="MIDI model directory (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"),
                        help="the training corpus (prepared) whose notes give the instrument means")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import mididdsp
    from mididdsp.audio import load_audio
    from mididdsp.expression.extract import extract
    from mididdsp.models import load_model
    from mididdsp.resynth import PRETRAINED
    from mididdsp.score import read_midi

    midi_model = mididdsp.load_model(args.model)
    coder = load_model(PRETRAINED / "synthesis_coder")
    means = training_means(midi_model, args.data)
    sources = ("recording", "prior", "instrument mean")
    pooled: dict[str, dict[str, dict[str, list]]] = {}   # instrument -> source -> control -> values
    for corpus in args.corpora:
        taken: dict[str, int] = {}
        for meta_path in sorted(p for p in corpus.glob("*.json") if p.name != "manifest.json"):
            meta = json.loads(meta_path.read_text())
            instrument = meta["instrument"]
            if taken.get(instrument, 0) >= args.per_instrument or instrument not in means or (
                    args.instruments and instrument not in args.instruments.split(",")):
                continue
            taken[instrument] = taken.get(instrument, 0) + 1
            started = time.perf_counter()
            audio = load_audio(corpus / meta["audio"])
            with tempfile.TemporaryDirectory() as tmp:
                stripped = Path(tmp) / "notes.mid"
                notes_only(corpus / meta["midi"], stripped)
                score = read_midi(stripped)
            prior_table = midi_model.expression(score, seed=0, temperature=1.0, instrument=instrument)
            mean_table = prior_table.copy()
            for k, name in enumerate(CONTROLS + ("vibrato_rate_hz",)):
                mean_table[name] = np.full(len(mean_table), means[instrument][k], np.float32)
            audios = {"recording": audio}
            for label, table in (("prior", prior_table), ("instrument mean", mean_table)):
                audios[label] = fit(midi_model.render(score, table, seed=0, instrument=instrument).audio, len(audio))
            slot = pooled.setdefault(instrument, {s: {c: [] for c in CONTROLS + ("contour",)} for s in sources})
            for label, signal in audios.items():
                table = extract(signal, score, coder, instrument).table
                for name in CONTROLS:
                    slot[label][name].append(np.asarray(table[name], np.float64))
                slot[label]["contour"].append(contour_deviations(signal, score))
            print(f"{corpus.name} {meta['name']} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    rows = {}
    for instrument, slot in sorted(pooled.items()):
        truth = {c: np.concatenate(v) for c, v in slot["recording"].items()}
        rows[instrument] = {label: {c: wasserstein_1d(np.concatenate(slot[label][c]), truth[c])
                                    for c in CONTROLS + ("contour",)} for label in ("prior", "instrument mean")}
    print("\nW1 to the recordings' distribution, mean over instruments (prior / instrument mean):")
    summary = {}
    for column in CONTROLS + ("contour",):
        pair = [float(np.nanmean([rows[i][label][column] for i in rows])) for label in ("prior", "instrument mean")]
        summary[column] = {"prior": pair[0], "instrument mean": pair[1]}
        unit = "dB" if column == "contour" else "scale"
        print(f"  {column:22s} {pair[0]:7.3f} / {pair[1]:7.3f} {unit}")
    controls_mean = [float(np.mean([summary[c][label] for c in CONTROLS])) for label in ("prior", "instrument mean")]
    print(f"  {'six controls, mean':22s} {controls_mean[0]:7.3f} / {controls_mean[1]:7.3f} scale")
    print("\nper instrument, six-control mean W1 (prior / instrument mean); contour W1 dB:")
    for instrument, by_label in rows.items():
        print(f"  {instrument:12s} " + " / ".join(f"{np.mean([by_label[l][c] for c in CONTROLS]):.3f}"
                                                  for l in ("prior", "instrument mean"))
              + "; " + " / ".join(f"{by_label[l]['contour']:.2f}" for l in ("prior", "instrument mean")))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "per_instrument": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
