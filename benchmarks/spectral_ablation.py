"""Where the generator's reconstruction spectral loss goes (issue 25): each test recording rendered from its notes
and extracted expression by the generator, then with one of its controls replaced by the teacher's (the synthesis
coder's controls the generator was trained on), all played by the generator's synthesizer and reverb; and the coder
itself through its own synthesizer (`mididdsp eval controls`' reference).

    python benchmarks/spectral_ablation.py [MODEL] --data data/prepared [--split test]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

CONTROLS = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")


def main() -> int:
    from mididdsp.datasets.shards import load_manifest, open_shard
    from mididdsp.datasets.teacher import ensure_teacher, load_teacher, note_targets
    from mididdsp.dsp import multiscale_spectral_loss
    from mididdsp.evaluate import _generator_dir
    from mididdsp.models import load_model, model_metadata
    from mididdsp.render import PRETRAINED_MIDI
    from mididdsp.resynth import SHIPPED_CODER
    from mididdsp.synthesis.generator import generate_voice

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(PRETRAINED_MIDI))
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--split", default="test")
    parser.add_argument("--noise-offsets", default="",
                        help="comma-separated dB: rows with the generator's noise bands moved by each (a level bias?)")
    args = parser.parse_args()
    offsets = [float(x) for x in args.noise_offsets.split(",") if x]
    torch.set_num_threads(1)
    generator = load_model(_generator_dir(args.model), expected=("SynthesisGenerator",))
    coder = load_model(SHIPPED_CODER)
    folder = ensure_teacher(args.data, SHIPPED_CODER)
    gen_ids = model_metadata(generator)["instruments"]
    coder_ids = model_metadata(coder)["instruments"]
    rows = {"generator": [], **{f"teacher {name}": [] for name in CONTROLS}, "teacher: all four": [],
            "coder (its own synthesizer)": [], **{f"generator, noise {db:+g} dB": [] for db in offsets}}
    for recording in load_manifest(args.data)["recordings"]:
        name = recording["instrument"]
        if recording["split"] != args.split or not recording["has_notes"] or name not in gen_ids:
            continue
        teacher = load_teacher(folder, recording["id"])
        shard = open_shard(Path(args.data) / recording["shard"])
        audio = torch.from_numpy(np.asarray(shard["audio"], np.float32) * float(shard["audio_scale"]))[None]
        expression, _ = note_targets(teacher, with_offset=True)
        frames = len(teacher["f0_hz"])
        controls = generate_voice(generator, teacher["notes"], expression, gen_ids[name], frames, seed=0)
        ids = torch.tensor([gen_ids[name]])

        def loss(replaced: tuple[str, ...], noise_db: float = 0.0) -> float:
            mixed = {key: value for key, value in controls.items() if key in CONTROLS}
            mixed["noise_magnitudes"] = mixed["noise_magnitudes"] * 10 ** (noise_db / 20)
            for key in replaced:
                mixed[key] = torch.as_tensor(np.asarray(teacher[key], np.float32))[None, :frames]
            with torch.no_grad():
                out = generator.synth.render(mixed, audio.shape[1], ids, generator=torch.Generator().manual_seed(0))
            return float(multiscale_spectral_loss(out, audio))

        rows["generator"].append(loss(()))
        for key in CONTROLS:
            rows[f"teacher {key}"].append(loss((key,)))
        rows["teacher: all four"].append(loss(CONTROLS))
        for db in offsets:
            rows[f"generator, noise {db:+g} dB"].append(loss((), db))
        with torch.no_grad():
            f0 = torch.from_numpy(np.asarray(teacher["f0_hz"], np.float32))[None]
            loud = torch.from_numpy(np.asarray(shard["loudness_db"], np.float32))[None]
            coded = coder(f0, loud, audio, torch.tensor([coder_ids[name]]), audio.shape[1])["audio"]
        rows["coder (its own synthesizer)"].append(float(multiscale_spectral_loss(coded, audio)))
        print(f"{recording['id']}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()), flush=True)
    print(f"\nmean over {len(rows['generator'])} {args.split} recordings, multi-scale spectral loss:")
    for key, values in rows.items():
        print(f"| {key} | {np.mean(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
