"""What the level-by-construction design costs in spectral loss, measured on a model that chose its own level.

The shipped autoencoder and coder predict the timbre only; each frame's level is set so that the synthesis reads
the input's measured loudness (:func:`mididdsp.dsp.processors.match_loudness`). The first autoencoder (git
0090b50: 4 instruments, FluidR3 only) predicted its amplitude freely and was trained for it through the spectral
loss. Rendering its controls as they are, then with only their level replaced by the matched one (timbre, f0 and
reverb untouched), and each of those after the closed-loop passes of ``mididdsp resynth``
(:meth:`mididdsp.dsp.DDSPSynth.correct_loudness`), measures what the constraint itself costs, apart from training.

Two steps, because the first model runs only with the code it was trained with:

    git worktree add /tmp/first-model 0090b50
    make data-first                                  # the first models' corpus (data_first/prepared)
    PYTHONPATH=/tmp/first-model python benchmarks/level_constraint_cost.py dump \\
        /tmp/first-model/mididdsp/pretrained/autoencoder --data data_first/prepared -o first_controls.pt
    python benchmarks/level_constraint_cost.py score first_controls.pt

``dump`` uses only what both versions have (the dataset, ``network_outputs``, ``synth.get_controls``, the
reverb's impulse response). ``score`` prints the spectral loss (4 s pieces, as ``eval_autoencoder.py``) and the
loudness L1 (frames above -60 dB) of each variant, per instrument and overall.
"""
from __future__ import annotations

import argparse
import collections

import torch


def dump(model_dir: str, data: str, splits: list[str], output: str) -> None:
    from mididdsp.datasets.torch_data import RecordingDataset
    from mididdsp.models import load_model

    model = load_model(model_dir).eval()
    model_ids = model.metadata.get("instruments", {})
    recordings = []
    for split in splits:
        dataset = RecordingDataset(data, split)
        names = {index: name for name, index in dataset.instruments.items()}
        for index in range(len(dataset)):
            item = dataset[index]
            name = names[int(item["instrument"])]
            if name not in model_ids:  # an instrument the model has not learned
                continue
            ids = torch.tensor([model_ids[name]])
            with torch.inference_mode():
                outputs = model.network_outputs(item["f0_hz"][None], item["loudness_db"][None], None, ids)
                controls = model.synth.get_controls(outputs)
                impulse_response = model.synth.reverb.get_impulse_response(ids)
            recordings.append({"instrument": name, "audio": item["audio"], "loudness_db": item["loudness_db"],
                               "controls": {key: value.clone() for key, value in controls.items()},
                               "impulse_response": impulse_response.clone()})
    torch.save(recordings, output)
    print(f"{len(recordings)} recordings -> {output}")


def score(path: str) -> None:
    from eval_autoencoder import piecewise_spectral_loss
    from mididdsp.dsp import DDSPSynth, compute_loudness
    from mididdsp.dsp.effects import reverb_power_gain
    from mididdsp.dsp.processors import match_loudness

    torch.set_num_threads(2)
    recordings = torch.load(path, weights_only=False)
    spectral: dict[str, list[float]] = collections.defaultdict(list)
    loudness: dict[str, list[float]] = collections.defaultdict(list)
    variants = ("free", "matched", "free + 2 passes", "matched + 2 passes")
    for recording in recordings:
        impulse_response = recording["impulse_response"]
        synth = DDSPSynth(reverb="learned", reverb_seconds=impulse_response.shape[-1] / 16000)
        with torch.no_grad():
            synth.reverb.impulse_response.copy_(impulse_response)  # tap 0 is the dry path either way
        audio, level = recording["audio"], recording["loudness_db"][None]
        n_samples = audio.shape[-1]
        noise = torch.rand(1, n_samples, generator=torch.Generator().manual_seed(0)) * 2 - 1
        free = recording["controls"]
        matched = match_loudness(free, level, synth.sample_rate,
                                 reverb_power_gain(synth.reverb.get_impulse_response(), synth.sample_rate))
        controls = {"free": free, "matched": matched,
                    "free + 2 passes": synth.correct_loudness(free, level, n_samples, noise=noise),
                    "matched + 2 passes": synth.correct_loudness(matched, level, n_samples, noise=noise)}
        sounding = level[0] > -60
        for variant in variants:
            output = synth.render(controls[variant], n_samples, noise=noise)[0]
            error = (compute_loudness(output[None])[0, :level.shape[1]] - level[0]).abs()[sounding]
            for key in (recording["instrument"], "all"):
                spectral[key, variant] += piecewise_spectral_loss(output, audio)
                loudness[key, variant].append(error.mean().item())
    print("| instrument | " + " | ".join(f"{variant}: spectral / loudness L1 dB" for variant in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for key in sorted({key for key, _ in spectral}, key=lambda name: (name == "all", name)):
        cells = [f"{sum(spectral[key, v]) / len(spectral[key, v]):.2f} / "
                 f"{sum(loudness[key, v]) / len(loudness[key, v]):.2f}" for v in variants]
        print(f"| {key} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dump_parser = commands.add_parser("dump", help="a free-level model's controls on held-out recordings")
    dump_parser.add_argument("model")
    dump_parser.add_argument("--data", required=True)
    dump_parser.add_argument("--splits", default="valid,test")
    dump_parser.add_argument("-o", "--output", required=True)
    score_parser = commands.add_parser("score", help="render them free and level-matched, and score")
    score_parser.add_argument("controls")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.model, args.data, args.splits.split(","), args.output)
    else:
        score(args.controls)


if __name__ == "__main__":
    main()
