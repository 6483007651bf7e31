"""Is a model short of training, or does it need a voice per SoundFont? Train one instrument's parameters only.

    python benchmarks/adapt_instrument.py MODEL INSTRUMENTS [--steps 200] [--train-data data/prepared]
        [--corpus data/corpus] [--eval-data data_first/prepared]

For each instrument, starting from MODEL (an autoencoder) each time, only its row of the instrument embedding and
of the reverb is trained (Adam, 200 steps of 8 x 2 s crops, seed 0) on the instrument's training recordings of
``--train-data``: played by one SoundFont of the corpus, by the other, or by both. Each result is scored on the
instrument's valid + test recordings of ``--eval-data`` (spectral loss over 4 s pieces, no loudness passes), beside
MODEL itself. If the SoundFont-specific rows score well below the rows trained on both, the instrument's two
SoundFonts need separate voices; if training on both gets most of the way, the model was short of training.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from eval_autoencoder import piecewise_spectral_loss
from mididdsp.datasets.torch_data import CropDataset, RecordingDataset
from mididdsp.dsp import multiscale_spectral_loss
from mididdsp.models import load_model
from mididdsp.resynth import synthesize_from_features


def score(model, data: str, instrument: str) -> float:
    dataset = RecordingDataset(data, ["valid", "test"], instruments=[instrument])
    row = model.metadata["instruments"][instrument]
    losses = []
    for index in range(len(dataset)):
        item = dataset[index]
        output = synthesize_from_features(model, item["f0_hz"], item["loudness_db"], item["audio"].numpy(), row,
                                          loudness_passes=0)
        losses += piecewise_spectral_loss(torch.from_numpy(output), item["audio"])
    return float(np.mean(losses))


def adapt(model, data: str, instrument: str, soundfont_of: dict[str, str], soundfont: str | None, steps: int):
    """A copy of ``model`` whose ``instrument`` rows (embedding, reverb) are trained on its recordings played by
    ``soundfont`` (None: all)."""
    torch.manual_seed(0)
    model = copy.deepcopy(model).train()
    crops = CropDataset(data, "train", 2.0, instruments=[instrument])
    crops.recordings = [r for r in crops.recordings
                        if soundfont is None or soundfont_of[r["id"].split("/", 1)[1]] == soundfont]
    crops.items = [(index, -1) for index, r in enumerate(crops.recordings)
                   for _ in range(max(1, round(r["n_samples"] / crops.crop_samples)))]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    # Only this instrument's rows get gradients: the batches hold no other instrument.
    embedding, impulse_response = model.instrument_embedding.weight, model.synth.reverb.impulse_response
    embedding.requires_grad_(True)
    impulse_response.requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [embedding], "lr": 3e-3}, {"params": [impulse_response], "lr": 1e-4}])
    loader = torch.utils.data.DataLoader(crops, batch_size=8, shuffle=True, drop_last=True)
    step = 0
    while step < steps:
        for batch in loader:
            outputs = model.network_outputs(batch["f0_hz"], batch["loudness_db"], None, batch["instrument"],
                                            batch["loudness_reference_db"])
            audio = model.synth(outputs, batch["audio"].shape[-1], batch["instrument"])["audio"]
            loss = multiscale_spectral_loss(audio, batch["audio"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step >= steps:
                break
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("instruments", help="comma-separated")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--train-data", default="data/prepared")
    parser.add_argument("--corpus", default="data/corpus", help="the corpus --train-data was prepared from")
    parser.add_argument("--eval-data", default="data_first/prepared")
    args = parser.parse_args()
    torch.set_num_threads(2)
    manifest = json.loads((Path(args.corpus) / "manifest.json").read_text())
    soundfont_of = {r["name"]: Path(r["soundfont"]).stem for r in manifest["recordings"]}
    soundfonts = sorted(set(soundfont_of.values()))
    base = load_model(args.model)
    print("| instrument | model | " + " | ".join(f"rows trained on {name}" for name in soundfonts)
          + " | rows trained on all |")
    print("|---|---|" + "---|" * (len(soundfonts) + 1))
    for instrument in args.instruments.split(","):
        losses = [score(base, args.eval_data, instrument)]
        for soundfont in [*soundfonts, None]:
            adapted = adapt(base, args.train_data, instrument, soundfont_of, soundfont, args.steps)
            losses.append(score(adapted, args.eval_data, instrument))
        print(f"| {instrument} | " + " | ".join(f"{loss:.2f}" for loss in losses) + " |", flush=True)


if __name__ == "__main__":
    main()
