"""Resynthesis quality of autoencoder models on held-out recordings, with the DDSP paper's metrics.

    python benchmarks/eval_autoencoder.py MODEL_DIR [MODEL_DIR ...] --data data/prepared [--splits valid,test]

For every recording of the given splits (never used in training), the model resynthesises the audio from the
recording's own features (f0 and loudness from `mididdsp prepare`), then:
  * F0 L1: mean |midi(f0_in) - midi(f0_out)| in semitones, CREPE (tiny, as in prepare) on both, over frames whose
    input confidence >= 0.85; frames off by half an octave or more are gross errors (CREPE's octave and fifth
    confusions, 7-12 semitones), counted apart as outliers, so the L1 is over frames read as the right note.
    (Until 2026-12-02 the cut was at 12 semitones: an octave error read 11.9 semitones off stayed in the L1.)
  * loudness L1: mean |loudness_in - loudness_out| in dB over frames where the input is above -60 dB;
  * spectral loss: the multi-scale spectral loss (DDSP settings) over consecutive 4 s pieces (the last one
    if >= 1 s), averaged.
Prints one markdown table per model (per instrument and overall) and the seconds it took.
"""
from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

from mididdsp.datasets.torch_data import RecordingDataset
from mididdsp.dsp import compute_loudness, hz_to_midi, multiscale_spectral_loss
from mididdsp.models import load_model
from mididdsp.pitch import compute_f0, refine_f0
from mididdsp.resynth import synthesize_from_features

GROSS_ERROR_SEMITONES = 6.0


def piecewise_spectral_loss(output: torch.Tensor, target: torch.Tensor, piece: int = 64000) -> list[float]:
    """The multi-scale spectral loss of consecutive ``piece``-sample pieces (4 s at 16 kHz) of two [samples]
    signals; a shorter last piece counts if it lasts at least 1 s."""
    starts = [start for start in range(0, target.shape[-1], piece) if target.shape[-1] - start >= 16000]
    return [multiscale_spectral_loss(output[None, start:start + piece], target[None, start:start + piece]).item()
            for start in starts]


def evaluate(model, dataset: RecordingDataset, f0_refine: bool = False, loudness_passes: int = 2
             ) -> dict[str, dict[str, float]]:
    names = {index: name for name, index in dataset.instruments.items()}
    model_ids = model.metadata.get("instruments", {})
    sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for index in range(len(dataset)):
        item = dataset[index]
        name = names[int(item["instrument"])]
        audio = item["audio"].numpy()
        f0_in = refine_f0(audio, item["f0_hz"]) if f0_refine else item["f0_hz"]
        output = synthesize_from_features(model, f0_in, item["loudness_db"], audio, model_ids.get(name, 0),
                                          loudness_passes=loudness_passes)
        f0_out, _ = compute_f0(output)
        voiced = item["confidence"] >= 0.85
        error = (hz_to_midi(item["f0_hz"]) - hz_to_midi(f0_out)).abs()[voiced]
        inlier = error < GROSS_ERROR_SEMITONES
        loud_in, loud_out = item["loudness_db"], compute_loudness(torch.from_numpy(output))
        active = loud_in > -60
        for loss in piecewise_spectral_loss(torch.from_numpy(output), torch.from_numpy(audio)):
            for key in (name, "all"):
                sums[key]["spectral_sum"] += loss
                sums[key]["spectral_count"] += 1
        for key in (name, "all"):
            counter = sums[key]
            counter["recordings"] += 1
            counter["f0_sum"] += error[inlier].sum().item()
            counter["f0_count"] += int(inlier.sum())
            counter["f0_outliers"] += int((~inlier).sum())
            counter["f0_frames"] += int(voiced.sum())
            counter["loudness_sum"] += (loud_in - loud_out).abs()[active].sum().item()
            counter["loudness_count"] += int(active.sum())
    results = {}
    for key, counter in sums.items():
        results[key] = {
            "recordings": counter["recordings"],
            "f0_l1_semitones": counter["f0_sum"] / max(counter["f0_count"], 1),
            "f0_outlier_percent": 100 * counter["f0_outliers"] / max(counter["f0_frames"], 1),
            "loudness_l1_db": counter["loudness_sum"] / max(counter["loudness_count"], 1),
            "spectral_loss": counter["spectral_sum"] / max(counter["spectral_count"], 1),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--splits", default="valid,test")
    parser.add_argument("--f0-refine", action="store_true",
                        help="drive the model with CREPE's f0 refined by mididdsp.pitch.refine_f0 (F0 L1 still "
                             "compares CREPE's reading of the input with CREPE's reading of the output)")
    parser.add_argument("--loudness-passes", type=int, default=2,
                        help="rounds of closed-loop loudness correction, as `mididdsp resynth --loudness-passes` "
                             "(default 2, resynth's default)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    dataset = RecordingDataset(args.data, args.splits.split(","))
    for model_dir in args.models:
        model = load_model(model_dir)
        start = time.perf_counter()
        results = evaluate(model, dataset, args.f0_refine, args.loudness_passes)
        print(f"\n{model_dir} on {args.data} [{args.splits}], {args.loudness_passes} loudness passes "
              f"({time.perf_counter() - start:.0f} s)\n")
        print("| instrument | recordings | F0 L1 (semitones) | F0 outliers % | loudness L1 (dB) | spectral loss |")
        print("|---|---|---|---|---|---|")
        for key in sorted(results, key=lambda name: (name == "all", name)):
            row = results[key]
            print(f"| {key} | {row['recordings']} | {row['f0_l1_semitones']:.3f} | {row['f0_outlier_percent']:.2f} | "
                  f"{row['loudness_l1_db']:.2f} | {row['spectral_loss']:.2f} |")


if __name__ == "__main__":
    main()
