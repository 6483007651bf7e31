"""``mididdsp eval``: measured quality of the MIDI models.

    mididdsp eval controls MODEL --data PREPARED [--split test] [--json OUT]
    mididdsp eval prior    MODEL --data PREPARED [--split test] [--json OUT]

``eval controls`` measures a synthesis generator (MODEL: a MIDI model directory or a generator directory) on
the held-out recordings of a prepared folder, against their teacher tables (:mod:`mididdsp.datasets.teacher`):

* control fidelity (MIDI-DDSP's protocol): each control in turn is set to 0, 0.1, ..., 1 on every note (the
  others as extracted), the voice is generated, rendered, and re-extracted from the audio with the extractor of
  ``mididdsp extract`` (CREPE + refined f0 -> the synthesis coder -> the six controls); Pearson r of asked vs
  measured over all (note, value) pairs, on every note and on notes of at least 0.5 s;
* physical honesty on notes of at least 0.5 s: volume (dB) and vibrato extent (cents) asked vs measured (slope
  of a least-squares line, mean absolute error), vibrato rate error (Hz) where at least 20 cents were asked;
* reconstruction of each recording from its own notes + extracted expression: multi-scale spectral loss against
  the audio (beside the synthesis coder's and the autoencoder's resynthesis of the same audio), f0 error in cents
  inside notes (voiced frames), loudness L1 (dB), and expression re-extraction RMSE on the [0, 1] scale;
* over-smoothing: the frame-to-frame variation (:func:`frame_variation`) of level, harmonic distribution and noise
  inside notes, of the generator's controls against the teacher's (the synthesis coder's reading of the
  recording), as ratios generator / teacher (1 = as lively as the recording; the target is 0.8-1.25).

``eval prior`` is :func:`mididdsp.expression.prior_eval.evaluate_prior`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


SWEEP_VALUES = tuple(round(0.1 * i, 1) for i in range(11))
LONG_NOTE_S = 0.5
SWEEP_RATES_HZ = (4.5, 5.5, 6.5)  # vibrato rates given to notes without one in the vibrato sweep
PHYSICAL_SWEPT = ("volume_db", "vibrato_extent_cents", "vibrato_rate_hz")  # physical honesty: asked vs measured


def _generator_dir(model: str | Path) -> Path:
    model = Path(model)
    return model / "generator" if (model / "generator").is_dir() else model


def _pearson(x, y) -> float:
    import numpy as np

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _line(asked, measured) -> dict:
    import numpy as np

    asked, measured = np.asarray(asked, np.float64), np.asarray(measured, np.float64)
    if len(asked) < 3 or asked.std() == 0:
        return {"slope": float("nan"), "intercept": float("nan"), "mean_abs_error": float("nan"), "notes": len(asked)}
    slope, intercept = np.polyfit(asked, measured, 1)
    return {"slope": float(slope), "intercept": float(intercept),
            "mean_abs_error": float(np.mean(np.abs(measured - asked))), "notes": int(len(asked))}


def frame_variation(level_db: "np.ndarray", harmonic_distribution: "np.ndarray", noise_db: "np.ndarray",
                    note_index: "np.ndarray") -> dict:
    """Frame-to-frame variation of a voice's controls inside notes: sums and the pair count, so that several
    recordings add up (:func:`variation_means`).

    Args:
        level_db: [T] level (dB); harmonic_distribution: [T, K] (each frame is normalised to sum 1 here);
        noise_db: [T, M] noise bands (dB); note_index: [T] the note of each frame, -1 outside notes.
    Returns:
        ``pairs`` (consecutive frames inside one note), and over those pairs the sums of ``level_db`` |a_t -
        a_t-1| (dB), ``harmonics`` sum_k |h_t,k - h_t-1,k| (L1 between the two distributions, 0..2) and
        ``noise_db`` mean over bands |n_t - n_t-1| (dB).
    """
    import numpy as np

    note_index = np.asarray(note_index)
    same = (note_index[1:] == note_index[:-1]) & (note_index[1:] >= 0)
    h = np.asarray(harmonic_distribution, np.float64)
    h = h / np.maximum(h.sum(-1, keepdims=True), 1e-12)
    level, noise = np.asarray(level_db, np.float64), np.asarray(noise_db, np.float64)
    return {"pairs": int(same.sum()),
            "level_db": float(np.abs(np.diff(level))[same].sum()),
            "harmonics": float(np.abs(np.diff(h, axis=0)).sum(-1)[same].sum()),
            "noise_db": float(np.abs(np.diff(noise, axis=0)).mean(-1)[same].sum())}


VARIATION_NAMES = ("level_db", "harmonics", "noise_db")


def variation_means(parts: list[dict]) -> dict[str, float]:
    """Mean frame-to-frame variation per pair over several :func:`frame_variation` results."""
    pairs = max(1, sum(part["pairs"] for part in parts))
    return {name: sum(part[name] for part in parts) / pairs for name in VARIATION_NAMES}


def evaluate_controls(model: str | Path, data_dir: str | Path, split: str = "test", coder: str | Path | None = None,
                      max_seconds: float = 60.0, values: tuple[float, ...] = SWEEP_VALUES,
                      progress: bool = True, extractor_kind: str = "mixed") -> dict:
    """The figures of the module docstring as a JSON-able dict (see ``mididdsp eval controls``).

    ``extractor_kind``: re-extract as ``mididdsp extract --controls KIND`` does: ``mixed`` (its default: the
    coder's controls with the measured amplitude), ``model`` (the coder alone) or ``analysis`` (measuring the
    audio, which separates what the generator does from what the coder can hear)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from mididdsp.datasets.shards import load_manifest, open_shard
    from mididdsp.datasets.teacher import ensure_teacher, load_teacher, note_targets
    from mididdsp.dsp import compute_loudness, multiscale_spectral_loss, n_frames
    from mididdsp.errors import MididdspError
    from mididdsp.expression.controls import CONTROL_NAMES
    from mididdsp.expression.extract import extract
    from mididdsp.models import load_model, model_metadata
    from mididdsp.resynth import PRETRAINED, SHIPPED_CODER
    from mididdsp.score import Note, score_from_notes
    from mididdsp.synthesis.generator import generate_voice

    generator = load_model(_generator_dir(model), expected=("SynthesisGenerator",))
    coder_dir = Path(coder) if coder else SHIPPED_CODER
    extractor = load_model(coder_dir)
    folder = ensure_teacher(data_dir, coder_dir)
    gen_ids = model_metadata(generator).get("instruments") or {}
    coder_ids = model_metadata(extractor).get("instruments") or {}
    autoencoder = load_model(PRETRAINED / "autoencoder") if (PRETRAINED / "autoencoder").is_dir() else None
    chosen, total = [], 0.0
    for recording in load_manifest(data_dir)["recordings"]:
        if recording["split"] != split or not recording["has_notes"] or recording["instrument"] not in gen_ids:
            continue
        if recording["instrument"] not in coder_ids or total >= max_seconds:
            continue
        chosen.append(recording)
        total += recording["n_samples"] / 16000
    if not chosen:
        raise MididdspError(f"{data_dir}: no {split} recordings with notes of the model's instruments")

    sweeps = {name: {"asked": [], "measured": [], "long": []} for name in CONTROL_NAMES}
    physical = {"volume_db": ([], []), "vibrato_extent_cents": ([], []), "vibrato_rate_hz": ([], [])}
    recon = {"generator_spectral": [], "coder_spectral": [], "autoencoder_spectral": [], "f0_cents": [],
             "loudness_db": [], "expression_sq": {name: [] for name in CONTROL_NAMES}}
    # over-smoothing two ways: the generator's controls against the teacher's (what it was trained on), and the
    # render against the recording as one extractor reads both audios (its own frame jitter then sits on both sides)
    variation: dict[str, list[dict]] = {"generator": [], "teacher": [], "render_heard": [], "recording_heard": []}
    steps = len(chosen) * (1 + len(CONTROL_NAMES) * len(values))
    bar = tqdm(total=steps, desc="eval controls", unit="render", disable=not progress, file=sys.stderr)
    n_notes = 0
    for recording in chosen:
        teacher = load_teacher(folder, recording["id"])
        shard = open_shard(Path(data_dir) / recording["shard"])
        audio = np.asarray(shard["audio"], np.float32) * float(shard["audio_scale"])
        name = recording["instrument"]
        notes = teacher["notes"]
        n_notes += len(notes)
        base, present = note_targets(teacher, with_offset=True)
        # every table is read at the recording's own level offset, so the level controls compare as asked
        offset_db = float(np.median(base[present, 7])) if present.any() else 0.0
        score = score_from_notes([Note(float(s), float(e), int(p), int(v)) for s, e, p, v in notes],
                                 program=40)
        frames = n_frames(len(audio))
        long = (notes[:, 1] - notes[:, 0]) >= LONG_NOTE_S

        def render(expression: np.ndarray):
            controls = generate_voice(generator, notes, expression, gen_ids[name], frames, seed=0)
            with torch.no_grad():
                out = generator.synth.render(controls, len(audio), torch.tensor([gen_ids[name]]),
                                             generator=torch.Generator().manual_seed(0))[0].numpy()
            return out, controls

        def measure(audio_out: np.ndarray):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # the renders are the generator's output and the recordings are read against its notes alone:
                # no MIDI volume law to divide out
                result = extract(audio_out, score, extractor, name, extractor_kind, midi_volume=False)
            table = result.table.with_level_offset(offset_db)
            return table, result.features, result.controls

        # reconstruction from the extracted expression
        rendered, controls = render(base)
        table, features, heard_render = measure(rendered)
        heard_recording = measure(audio)[2]
        bar.update()
        with torch.no_grad():
            target = torch.from_numpy(audio)[None]
            recon["generator_spectral"].append(float(multiscale_spectral_loss(torch.from_numpy(rendered)[None], target)))
            f0 = torch.from_numpy(teacher["f0_hz"])[None]
            loud = torch.from_numpy(np.array(shard["loudness_db"], np.float32))[None]
            coded = extractor(f0, loud, target, torch.tensor([coder_ids[name]]), len(audio))["audio"]
            recon["coder_spectral"].append(float(multiscale_spectral_loss(coded, target)))
            if autoencoder is not None and name in (model_metadata(autoencoder).get("instruments") or {}):
                ids = torch.tensor([model_metadata(autoencoder)["instruments"][name]])
                crepe_f0 = torch.from_numpy(np.array(shard["f0_hz"], np.float32))[None]
                auto = autoencoder(crepe_f0, loud, target if autoencoder.encoder is not None else None, ids,
                                   len(audio))["audio"]
                recon["autoencoder_spectral"].append(float(multiscale_spectral_loss(auto, target)))
            loud_out = compute_loudness(torch.from_numpy(rendered)[None])[0].numpy()
        note_index = np.asarray(shard["note_index"])
        from mididdsp.dsp import DB_FLOOR, amplitude_to_db

        def variation_of(amplitude, harmonics, noise) -> dict:
            length = min(len(note_index), len(amplitude))
            return frame_variation(amplitude_to_db(torch.as_tensor(amplitude[:length]), DB_FLOOR).numpy(),
                                   np.asarray(harmonics[:length], np.float32),
                                   amplitude_to_db(torch.as_tensor(noise[:length]), DB_FLOOR).numpy(),
                                   note_index[:length])

        variation["generator"].append(variation_of(controls["amplitude"][0], controls["harmonic_distribution"][0],
                                                   controls["noise_magnitudes"][0]))
        variation["teacher"].append(variation_of(teacher["amplitude"], teacher["harmonic_distribution"],
                                                 teacher["noise_magnitudes"]))
        if "harmonic_distribution" in heard_render:  # the analysis extractor measures no noise bands
            for key, heard in (("render_heard", heard_render), ("recording_heard", heard_recording)):
                variation[key].append(variation_of(*(_numpy(heard[k]) for k in
                                                     ("amplitude", "harmonic_distribution", "noise_magnitudes"))))
        confident = (np.asarray(shard["confidence"]) >= 0.85) & (note_index >= 0)
        cents = 1200 * np.log2(np.maximum(features["f0_hz"].numpy(), 1.0) / np.maximum(teacher["f0_hz"], 1.0))
        recon["f0_cents"].append(np.abs(cents[confident]))
        recon["loudness_db"].append(np.abs(loud_out - np.asarray(shard["loudness_db"]))[:len(loud_out)])
        measured_rows = _by_note(table, notes, CONTROL_NAMES)
        for j, control in enumerate(CONTROL_NAMES):
            recon["expression_sq"][control].append(((measured_rows[:, j] - base[:, j]) ** 2)[present])

        # sweeps
        for j, control in enumerate(CONTROL_NAMES):
            for value in values:
                expression = base.copy()
                expression[:, j] = value
                if control == "vibrato":
                    no_rate = expression[:, 6] < 3.0
                    expression[no_rate, 6] = np.resize(np.array(SWEEP_RATES_HZ, np.float32), int(no_rate.sum()))
                rendered, _ = render(expression)
                table = measure(rendered)[0]
                rows = _by_note(table, notes, CONTROL_NAMES)
                sweeps[control]["asked"].append(np.full(int(present.sum()), value))
                sweeps[control]["measured"].append(rows[present, j])
                sweeps[control]["long"].append(long[present])
                physical_rows = dict(zip(PHYSICAL_SWEPT, _by_note(table, notes, PHYSICAL_SWEPT).T))
                if control == "volume":
                    low, high = generator.config.ranges["volume"]
                    physical["volume_db"][0].append((low + value * (high - low)) * np.ones(int((present & long).sum())))
                    physical["volume_db"][1].append(physical_rows["volume_db"][present & long])
                if control == "vibrato":
                    low, high = generator.config.ranges["vibrato"]
                    asked_cents = low + value * (high - low)
                    keep = present & long
                    physical["vibrato_extent_cents"][0].append(np.full(int(keep.sum()), asked_cents))
                    physical["vibrato_extent_cents"][1].append(physical_rows["vibrato_extent_cents"][keep])
                    if asked_cents >= 20:
                        physical["vibrato_rate_hz"][0].append(expression[keep, 6])
                        physical["vibrato_rate_hz"][1].append(physical_rows["vibrato_rate_hz"][keep])
                bar.update()
    bar.close()

    result: dict = {"model": str(model), "data": str(data_dir), "split": split,
                    "extractor": f"{extractor_kind} {coder_dir}" if extractor_kind != "analysis" else "analysis (no model)",
                    "recordings": [r["id"] for r in chosen], "seconds": round(total, 1),
                    "notes": n_notes,
                    "values": list(values)}
    fidelity, fidelity_long = {}, {}
    for control, data in sweeps.items():
        asked, measured, is_long = (np.concatenate(data[k]) for k in ("asked", "measured", "long"))
        fidelity[control] = _pearson(asked, measured)
        fidelity_long[control] = _pearson(asked[is_long], measured[is_long])
    result["control_fidelity_r"] = fidelity
    result["control_fidelity_r_long_notes"] = fidelity_long
    result["midi_ddsp_published_r"] = {"volume": 0.97, "volume_fluctuation": 0.78, "volume_peak_position": 0.57,
                                       "vibrato": 0.70, "brightness": 0.92, "attack_noise": 0.93}
    volume = _line(np.concatenate(physical["volume_db"][0]), np.concatenate(physical["volume_db"][1]))
    extent = _line(np.concatenate(physical["vibrato_extent_cents"][0]),
                   np.concatenate(physical["vibrato_extent_cents"][1]))
    rates = [np.concatenate(v) if v else np.zeros(0) for v in physical["vibrato_rate_hz"]]
    result["physical"] = {"volume_db": volume, "vibrato_extent_cents": extent,
                          "vibrato_rate_hz": {"mean_abs_error": float(np.mean(np.abs(rates[1] - rates[0])))
                                              if len(rates[0]) else float("nan"),
                                              "median_abs_error": float(np.median(np.abs(rates[1] - rates[0])))
                                              if len(rates[0]) else float("nan"), "notes": int(len(rates[0]))}}
    squared = {c: np.concatenate(v) for c, v in recon["expression_sq"].items()}
    result["reconstruction"] = {
        "spectral_loss": {"generator": float(np.mean(recon["generator_spectral"])),
                          "synthesis_coder": float(np.mean(recon["coder_spectral"])),
                          "autoencoder": float(np.mean(recon["autoencoder_spectral"]))
                          if recon["autoencoder_spectral"] else None},
        "f0_error_cents": float(np.mean(np.concatenate(recon["f0_cents"]))),
        "loudness_l1_db": float(np.mean(np.concatenate(recon["loudness_db"]))),
        "expression_rmse": {c: float(np.sqrt(np.mean(v))) for c, v in squared.items()},
    }
    result["reconstruction"]["expression_rmse"]["overall"] = float(
        np.sqrt(np.mean(np.concatenate(list(squared.values())))))
    rendered_variation, teacher_variation = (variation_means(variation[k]) for k in ("generator", "teacher"))
    result["frame_variation"] = {"generator": rendered_variation, "teacher": teacher_variation,
                                 "ratio": {name: rendered_variation[name] / max(teacher_variation[name], 1e-12)
                                           for name in VARIATION_NAMES}}
    if variation["render_heard"]:
        heard = {k: variation_means(variation[k]) for k in ("render_heard", "recording_heard")}
        result["frame_variation_heard"] = {"render": heard["render_heard"], "recording": heard["recording_heard"],
                                           "ratio": {name: heard["render_heard"][name]
                                                     / max(heard["recording_heard"][name], 1e-12)
                                                     for name in VARIATION_NAMES}}
    return result


def _numpy(values) -> "np.ndarray":
    """A [T, ...] or [1, T, ...] tensor or array -> [T, ...] float32 array."""
    import numpy as np

    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, np.float32)
    return array[0] if array.ndim >= 2 and array.shape[0] == 1 else array


def _by_note(table, notes: np.ndarray, columns) -> np.ndarray:
    """[n_notes, len(columns)] of a table of these notes, in the recording's note order (rows matched by start
    time: the table may split voices); notes without a row read 0."""
    import numpy as np

    index = np.abs(np.asarray(table["start"])[:, None] - notes[None, :, 0]).argmin(1)
    out = np.zeros((len(notes), len(columns)), np.float64)
    for j, name in enumerate(columns):
        out[index, j] = table[name]
    return out


def format_controls_report(result: dict) -> str:
    lines = [f"{result['model']} on {result['data']} ({result['split']}: {len(result['recordings'])} recordings, "
             f"{result['seconds']} s, {result['notes']} notes); extractor {result['extractor']}",
             "control fidelity, Pearson r (all notes / notes >= 0.5 s / MIDI-DDSP published):"]
    for name, r in result["control_fidelity_r"].items():
        lines.append(f"  {name:<22} {r:6.3f}  {result['control_fidelity_r_long_notes'][name]:6.3f}  "
                     f"{result['midi_ddsp_published_r'][name]:.2f}")
    p = result["physical"]
    lines.append(f"volume (dB), asked vs measured: slope {p['volume_db']['slope']:.3f}, mean |error| "
                 f"{p['volume_db']['mean_abs_error']:.2f} dB ({p['volume_db']['notes']} note renders)")
    lines.append(f"vibrato extent (cents): slope {p['vibrato_extent_cents']['slope']:.3f}, mean |error| "
                 f"{p['vibrato_extent_cents']['mean_abs_error']:.2f} cents; rate: mean |error| "
                 f"{p['vibrato_rate_hz']['mean_abs_error']:.3f} Hz, median {p['vibrato_rate_hz']['median_abs_error']:.3f} Hz")
    r = result["reconstruction"]
    spectral = r["spectral_loss"]
    lines.append(f"reconstruction: spectral loss {spectral['generator']:.3f} (synthesis coder "
                 f"{spectral['synthesis_coder']:.3f}, autoencoder "
                 f"{'not shipped' if spectral['autoencoder'] is None else format(spectral['autoencoder'], '.3f')}), f0 error "
                 f"{r['f0_error_cents']:.1f} cents, loudness L1 {r['loudness_l1_db']:.2f} dB")
    lines.append("expression re-extraction RMSE: " + ", ".join(f"{k} {v:.3f}" for k, v in r["expression_rmse"].items()))
    variation = result.get("frame_variation")
    if variation:
        units = {"level_db": "dB", "harmonics": "L1", "noise_db": "dB"}
        lines.append("frame-to-frame variation inside notes, generator / teacher (ratio; target 0.8-1.25): " + ", ".join(
            f"{name} {variation['generator'][name]:.3f} / {variation['teacher'][name]:.3f} {units[name]} "
            f"({variation['ratio'][name]:.2f})" for name in VARIATION_NAMES))
    heard = result.get("frame_variation_heard")
    if heard:
        lines.append("the same, render / recording as the extractor hears both (ratio): " + ", ".join(
            f"{name} {heard['render'][name]:.3f} / {heard['recording'][name]:.3f} {units[name]} "
            f"({heard['ratio'][name]:.2f})" for name in VARIATION_NAMES))
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=("controls", "prior"), help="controls: a synthesis generator; prior: an "
                                                                    "expression prior")
    parser.add_argument("model", help="model directory (a MIDI model, or its generator/ or prior/)")
    parser.add_argument("--data", required=True, help="prepared folder with notes (mididdsp prepare)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"), help="default: test")
    parser.add_argument("--coder", default=None, help="the extractor's synthesis coder (default: the shipped one)")
    parser.add_argument("--extractor", choices=("mixed", "model", "analysis"), default="mixed",
                        help="controls: re-extract as `mididdsp extract --controls KIND` (default: mixed, its "
                             "default)")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="controls: evaluate on at most about this much audio (default 60; each control "
                             "sweep renders and re-analyses it 11 times)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from mididdsp.fileio import write_text_atomic

    if args.what == "controls":
        result = evaluate_controls(args.model, args.data, args.split, args.coder, args.max_seconds,
                                   progress=sys.stderr.isatty(), extractor_kind=args.extractor)
        report = format_controls_report(result)
    else:
        from mididdsp.expression.prior_eval import evaluate_prior, format_prior_report

        model = Path(args.model)
        model = model / "prior" if (model / "prior").is_dir() else model
        result = evaluate_prior(model, args.data, args.split, args.coder)
        report = format_prior_report(result)
    print(report)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0
