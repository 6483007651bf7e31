"""Where the generator's reconstruction spectral loss goes (issue 25): each test recording rendered from its notes
and extracted expression by the generator, then with one of its controls replaced by the teacher's (the synthesis
coder's controls the generator was trained on), all played by the generator's synthesizer and reverb; and the coder
itself through its own synthesizer (`mididdsp eval controls`' reference).

    python benchmarks/spectral_ablation.py [MODEL] --data data/prepared [--split test] [--noise-variants]

``--noise-variants`` asks what of the teacher's noise a table could carry: its bands averaged (in dB) over each note
(with or without the 40 ms attack window apart), smoothed in time, and its level or its colour alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

CONTROLS = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")


NOISE_VARIANTS = ("teacher noise, mean dB per note", "teacher noise, mean dB per note, attack apart",
                  "teacher noise, mean power per note", "teacher noise, smoothed 0.1 s (dB)",
                  "teacher noise, smoothed 0.4 s (dB)", "teacher noise level, generator's colour",
                  "generator's noise level, teacher's colour",
                  "generator's noise, shifted per note to the teacher's mean level after the attack",
                  "generator's noise, scaled per note to the teacher's mean power after the attack")


def _segments(notes: np.ndarray, frames: int, attack_frames: int = 0) -> np.ndarray:
    """[frames] segment number: each note's frames (its first ``attack_frames`` apart when > 0), each rest."""
    boundaries = {0, frames}
    for start, end in notes[:, :2]:
        first, stop = int(round(start * 250)), int(round(end * 250))
        boundaries.update(b for b in (first, stop, first + attack_frames if attack_frames else first)
                          if 0 <= b <= frames)
    return np.searchsorted(np.array(sorted(boundaries)), np.arange(frames), side="right")


def _segment_mean(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """[frames, bands] -> each frame replaced by its segment's mean."""
    sums = np.zeros((segments.max() + 1, values.shape[1]))
    np.add.at(sums, segments, values)
    counts = np.bincount(segments, minlength=len(sums))[:, None]
    return (sums / np.maximum(counts, 1))[segments]


def noise_variants(teacher: np.ndarray, generated: np.ndarray, notes: np.ndarray) -> dict[str, np.ndarray]:
    """The teacher's noise magnitudes [frames, bands] (linear) reduced as :data:`NOISE_VARIANTS` name them."""
    frames = len(teacher)
    db = 20 * np.log10(np.maximum(teacher, 1e-6))
    generated_db = 20 * np.log10(np.maximum(generated, 1e-6))

    def smoothed(width: int) -> np.ndarray:
        kernel = np.ones(width) / width
        return np.stack([np.convolve(np.pad(band, width // 2, mode="edge"), kernel, "valid")[:frames]
                         for band in db.T], axis=1)

    level, colour = db.mean(1, keepdims=True), db - db.mean(1, keepdims=True)
    generated_level = generated_db.mean(1, keepdims=True)
    per_note, attack_apart = _segments(notes, frames), _segments(notes, frames, attack_frames=10)
    in_db = {NOISE_VARIANTS[0]: _segment_mean(db, per_note),
             NOISE_VARIANTS[1]: _segment_mean(db, attack_apart),
             NOISE_VARIANTS[3]: smoothed(25), NOISE_VARIANTS[4]: smoothed(101),
             NOISE_VARIANTS[5]: level + generated_db - generated_level,
             NOISE_VARIANTS[6]: generated_level + colour}
    # what a per-note sustained-noise control imposed in closed form would do: the generator's own shape and colour,
    # each note's frames after the 40 ms attack window moved to the teacher's mean level there (rests untouched)
    in_notes = np.zeros(frames, bool)
    for start, end in notes[:, :2]:
        first, stop = int(round(start * 250)) + 10, int(round(end * 250))
        in_notes[max(first, 0):max(min(stop, frames), 0)] = True
    shift = _segment_mean(level, attack_apart) - _segment_mean(generated_level, attack_apart)
    in_db[NOISE_VARIANTS[7]] = generated_db + np.where(in_notes[:, None], shift, 0.0)
    power = np.log10(_segment_mean((teacher.astype(np.float64) ** 2).mean(1, keepdims=True), attack_apart)
                     / _segment_mean((generated.astype(np.float64) ** 2).mean(1, keepdims=True), attack_apart))
    in_db[NOISE_VARIANTS[8]] = generated_db + np.where(in_notes[:, None], 10 * power, 0.0)
    out = {key: 10 ** (value / 20) for key, value in in_db.items()}
    out[NOISE_VARIANTS[2]] = np.sqrt(_segment_mean(teacher.astype(np.float64) ** 2, per_note))
    return out


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
    parser.add_argument("--noise-variants", action="store_true",
                        help="rows with the teacher's noise reduced to what a per-note control could carry")
    args = parser.parse_args()
    offsets = [float(x) for x in args.noise_offsets.split(",") if x]
    torch.set_num_threads(1)
    generator = load_model(_generator_dir(args.model), expected=("SynthesisGenerator",))
    coder = load_model(SHIPPED_CODER)
    folder = ensure_teacher(args.data, SHIPPED_CODER)
    gen_ids = model_metadata(generator)["instruments"]
    coder_ids = model_metadata(coder)["instruments"]
    rows = {"generator": [], **{f"teacher {name}": [] for name in CONTROLS}, "teacher: all four": [],
            "coder (its own synthesizer)": [], **{f"generator, noise {db:+g} dB": [] for db in offsets},
            **({name: [] for name in NOISE_VARIANTS} if args.noise_variants else {})}
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

        def loss(replaced: tuple[str, ...], noise_db: float = 0.0, noise: np.ndarray | None = None) -> float:
            mixed = {key: value for key, value in controls.items() if key in CONTROLS}
            mixed["noise_magnitudes"] = mixed["noise_magnitudes"] * 10 ** (noise_db / 20)
            if noise is not None:
                mixed["noise_magnitudes"] = torch.from_numpy(noise.astype(np.float32))[None]
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
        if args.noise_variants:
            generated = controls["noise_magnitudes"][0].numpy()[:frames]
            for key, noise in noise_variants(np.asarray(teacher["noise_magnitudes"])[:frames], generated,
                                             np.asarray(teacher["notes"])).items():
                rows[key].append(loss((), noise=noise))
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
