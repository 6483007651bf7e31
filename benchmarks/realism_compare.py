"""Validation figures of synthesis-generator runs, measured the same way for every run (docs/realism-notes.md).

    python benchmarks/realism_compare.py RUN_DIR [RUN_DIR ...] [--batches 4] [--checkpoint last]
    python benchmarks/realism_compare.py RUN_DIR --time 5

``--time N``: the training step's time (losses, backward, Adam step) of the run's model on one training batch of
its data, for the control losses alone, + the spectral loss, + the adversarial loss, interleaved N times (so that
other load on the machine falls on all three alike); the median of each.

For each run: its checkpoint's generator on the validation windows of its data (the trainer's first ``--batches``
batches, the same seeds as its validation): the control losses (level dB, noise dB, harmonic KL, f0 cents), the
spectral loss of a 1 s crop played with the generator's own f0 (what a render does) and with the teacher's f0
(what ``train.spectral_f0=teacher`` trains on), and the over-smoothing ratios: the frame-to-frame variation inside
whole notes of level, harmonic distribution and noise, generator / teacher (mididdsp.evaluate.frame_variation).
Training logs cannot give this comparison: each run's val_spectral is computed with its own f0 setting.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mididdsp.dsp import DB_FLOOR, amplitude_to_db
from mididdsp.evaluate import frame_variation, variation_means
from mididdsp.synthesis.generator import frame_layout
from mididdsp.training.data import mix_seed
from mididdsp.training.generator_module import GeneratorData, GeneratorModule


def measure(run_dir: Path, batches: int, checkpoint: str) -> dict:
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    data = GeneratorData(config)
    module = GeneratorModule(config["model"], config["train"], config["data"])
    state = torch.load(run_dir / "checkpoints" / f"{checkpoint}.ckpt", map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    module.eval()
    sums: dict[str, float] = {}
    parts: dict[str, list] = {"generator": [], "teacher": []}
    count = 0
    with torch.no_grad():
        for index, batch in enumerate(data.val_dataloader()):
            if index >= batches:
                break
            for path in ("generator", "teacher"):
                module.spectral_f0 = path
                seed = mix_seed(module.seed, -(1 << 40) - index)
                losses = module.compute_losses(batch, torch.Generator().manual_seed(seed))
                sums[f"spectral_{path}_f0"] = sums.get(f"spectral_{path}_f0", 0.0) + float(losses["spectral"])
            for name in ("level", "noise", "harmonics", "f0"):
                sums[name] = sums.get(name, 0.0) + float(losses[name])
            count += 1
            frames = batch["f0_hz"].shape[1]
            for i in range(batch["f0_hz"].shape[0]):
                start = int(batch["start_frame"][i])
                out = module.model(batch["notes"][i:i + 1], batch["note_mask"][i:i + 1], batch["expression"][i:i + 1],
                                   batch["instrument"][i:i + 1], frames, start, torch.Generator().manual_seed(0))
                layout = frame_layout(batch["notes"][i:i + 1].float(), batch["note_mask"][i:i + 1], frames, start)
                note = layout.note.clamp_min(0)
                whole = (layout.first.gather(1, note) >= start) & (layout.stop.gather(1, note) <= start + frames)
                inside = layout.active & whole & (batch["mask"][i:i + 1] > 0)
                note_index = torch.where(inside, layout.note, torch.full_like(layout.note, -1))[0].numpy()
                for who, controls in (("generator", out), ("teacher", {k: batch[k][i:i + 1] for k in out
                                                                        if k in batch})):
                    parts[who].append(frame_variation(
                        amplitude_to_db(controls["amplitude"][0], DB_FLOOR).numpy(),
                        controls["harmonic_distribution"][0].float().numpy(),
                        amplitude_to_db(controls["noise_magnitudes"][0], DB_FLOOR).numpy(), note_index))
    figures = {name: value / max(count, 1) for name, value in sums.items()}
    rendered, recorded = variation_means(parts["generator"]), variation_means(parts["teacher"])
    figures["variation_generator"] = rendered
    figures["variation_teacher"] = recorded
    figures["variation_ratio"] = {k: rendered[k] / max(recorded[k], 1e-12) for k in rendered}
    figures["step"] = int(state["global_step"])
    return figures


def time_steps(run_dir: Path, repeats: int) -> dict[str, float]:
    import statistics
    import time

    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    data = GeneratorData(config)
    data.setup()
    batch = next(iter(torch.utils.data.DataLoader(data.datasets["train"], batch_size=data.batch_size,
                                                  collate_fn=__import__("mididdsp.training.generator_module",
                                                                        fromlist=["collate"]).collate)))
    weights = {"controls": {"spectral": 0.0, "adversarial": 0.0, "feature_matching": 0.0},
               "spectral": {"spectral": 1.0, "adversarial": 0.0, "feature_matching": 0.0},
               "spectral + adversarial": {"spectral": 1.0, "adversarial": 0.5, "feature_matching": 1.0}}
    modules = {}
    for name, changed in weights.items():
        train = {**config["train"], "loss_weights": {**config["train"]["loss_weights"], **changed}}
        module = GeneratorModule(config["model"], train, config["data"]).train()
        optimizer = module.configure_optimizers()["optimizer"]
        modules[name] = (module, optimizer)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for repeat in range(repeats + 1):
        for name, (module, optimizer) in modules.items():
            started = time.perf_counter()
            loss = module.compute_losses(batch, torch.Generator().manual_seed(repeat))["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if repeat:  # the first round warms up
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--checkpoint", default="last")
    parser.add_argument("--json", default=None)
    parser.add_argument("--time", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.time:
        for name, seconds in time_steps(args.runs[0], args.time).items():
            print(f"{name}: {seconds:.3f} s a step (median of {args.time})", flush=True)
        return
    results = {}
    print("run | step | f0 cents | harmonic KL | level dB | noise dB | spectral (generator f0) | spectral (teacher f0) "
          "| variation ratio level / harmonics / noise")
    for run_dir in args.runs:
        f = measure(run_dir, args.batches, args.checkpoint)
        results[str(run_dir)] = f
        ratio = f["variation_ratio"]
        print(f"{run_dir.name} | {f['step']} | {f['f0']:.1f} | {f['harmonics']:.3f} | {f['level']:.2f} | "
              f"{f['noise']:.2f} | {f['spectral_generator_f0']:.3f} | {f['spectral_teacher_f0']:.3f} | "
              f"{ratio['level_db']:.2f} / {ratio['harmonics']:.2f} / {ratio['noise_db']:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
