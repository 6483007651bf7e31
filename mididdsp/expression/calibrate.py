"""Per-model [0, 1] scales for the six expression controls, measured on the model's training notes.

    mididdsp calibrate MODEL_DIR --data PREPARED_DIR [--split train]

The scaled controls are ``clip((x - low) / (high - low), 0, 1)`` of a physical quantity (dB, cents, ...). Fixed
``(low, high)`` ranges (:data:`mididdsp.expression.controls.CONTROL_RANGES`) cannot suit every model: a model's
amplitude and noise levels depend on its training data and its own output scale, and with the fixed ranges the
shipped synthesis coder's notes used only 0.02-0.53 of the volume scale and 0-0.33 of the attack-noise scale.
So every model carries its own ranges in its ``config.yaml`` (``expression_ranges``): the 1st and 99th
percentiles of each physical quantity over the notes of its training split, measured with the model's own
controls, so that the model's real notes span the whole scale (about 1 % of notes clip at either end).

The volume range is then widened by :data:`MARGINS` of its span on each side: levels are relative to each
recording, and a recording more dynamic than the training corpus (a held-out contrabass spanning 24 dB, a
trumpet's loudest notes) put 11-17 % of its notes at the ends of the 1-99 % range, where the scale squeezed its
dynamics; with the margin the same recordings stay on the scale (docs/RESULTS.md, realism part 1).

Exceptions: the peak position is already a fraction of the note (0 .. 1 always); the vibrato scale starts at 0
cents (no vibrato), its top is the 99th percentile. A range is widened to at least :data:`MIN_SPANS` around its
middle (moved up where it would pass a physical floor: a standard deviation's 0, the first harmonic)
so that data with (nearly) no spread, e.g. an instrument played without vibrato, does not turn a cent of
tracking noise into the whole scale. Without ``expression_ranges`` (older models, ``--controls analysis``) the
fixed ranges apply.

On an expression prior (``mididdsp calibrate mididdsp/pretrained/midi/prior --data PREPARED_DIR``) the command
fits how a recording's level follows its velocities instead, on the teacher cache the prior was trained on, and
stores it as ``velocity_levels``: the level a render from the prior plays each track at
(:mod:`mididdsp.expression.levels`).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from mididdsp.errors import MididdspError

RANGE_PERCENTILES = (1.0, 99.0)
FIXED_RANGES = {"volume_peak_position": (0.0, 1.0)}
ZERO_BASED = ("vibrato",)  # the scale's 0 is the physical 0 (no vibrato)
MARGINS = {"volume": 0.25}  # of the 1-99 % span, added on each side (see the module docstring)
MIN_SPANS = {"volume": 12.0, "volume_fluctuation": 3.0, "vibrato": 20.0, "brightness": 1.0, "attack_noise": 12.0}
PHYSICAL_FLOORS = {"volume_fluctuation": 0.0, "brightness": 1.0}  # a widened range is moved up to these
MIN_NOTES = 20


def ranges_from_values(physical: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Physical values of many notes (keys: :data:`~mididdsp.expression.controls.PHYSICAL_NAMES`, each [notes])
    -> ``{control: (low, high)}`` for the six controls, as described in the module docstring. Rounded outwards
    to 0.01."""
    from mididdsp.expression.controls import CONTROL_NAMES, PHYSICAL_OF

    ranges: dict[str, tuple[float, float]] = {}
    for name in CONTROL_NAMES:
        if name in FIXED_RANGES:
            ranges[name] = FIXED_RANGES[name]
            continue
        values = np.asarray(physical[PHYSICAL_OF[name]], dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) < MIN_NOTES:
            raise MididdspError(f"calibration: only {len(values)} notes with {PHYSICAL_OF[name]}; "
                                f"expected at least {MIN_NOTES}")
        low, high = (float(v) for v in np.percentile(values, RANGE_PERCENTILES))
        if name in ZERO_BASED:
            low, high = 0.0, max(high, MIN_SPANS[name])
        elif high - low < MIN_SPANS[name]:
            middle = 0.5 * (low + high)
            low, high = middle - 0.5 * MIN_SPANS[name], middle + 0.5 * MIN_SPANS[name]
            shift = max(0.0, PHYSICAL_FLOORS.get(name, -math.inf) - low)  # e.g. a std is never below 0
            low, high = low + shift, high + shift
        margin = MARGINS.get(name, 0.0) * (high - low)
        low, high = low - margin, high + margin
        ranges[name] = (math.floor(low * 100.0) / 100.0, math.ceil(high * 100.0) / 100.0)
    return ranges


def measure_notes(model, data_dir: str | Path, split: str = "train", progress: bool = True, f0_refine: bool = True,
                  amplitude_gains: dict | None = None, references: dict | None = None
                  ) -> tuple[dict[str, np.ndarray], int]:
    """The physical controls of every note in ``split`` of a prepared folder, from ``model``'s synthesis controls,
    with levels relative to each recording as ``mididdsp extract`` stores them.

    Returns ``({physical name: [notes], "level_offset_db": [notes]}, recordings used)``. Each instrument's
    reference level is the median over its recordings of their median note level (``references``, when a dict,
    receives them, dB); each recording's ``volume_db`` and ``attack_noise_db`` are returned minus its offset from
    that reference (:func:`mididdsp.expression.controls.relative_levels`), so the ranges measure the notes' spread
    within a recording, not the recordings' gains. Recordings without notes, or of an instrument the model does
    not know, are left out. ``f0_refine``: the shards' CREPE f0 is refined as ``mididdsp extract``
    refines it (:func:`mididdsp.pitch.refine_f0`), so the ranges fit what extraction measures.
    ``amplitude_gains``: when a dict, filled with each instrument's median log ratio (natural log) of the model's
    amplitude to the amplitude measured from the audio, over frames above ``extract.SOUNDING_DB``: the gain that
    puts measured amplitudes on the model's scale (``mididdsp extract --controls mixed``).
    """
    import torch

    from mididdsp.datasets.torch_data import RecordingDataset
    from mididdsp.expression.controls import LEVEL_OFFSET, PHYSICAL_NAMES, level_offset, note_expression, relative_levels
    from mididdsp.expression.extract import SOUNDING_DB, chunked_analysis_controls, model_controls
    from mididdsp.models import model_metadata
    from mididdsp.pitch import refine_f0
    from tqdm import tqdm

    dataset = RecordingDataset(data_dir, split=split)
    known = model_metadata(model).get("instruments") or {}
    recordings = [i for i, r in enumerate(dataset.recordings) if r["has_notes"] and r["instrument"] in known]
    if not recordings:
        raise MididdspError(f"{data_dir}: no {split} recordings with notes of the model's instruments "
                            f"({', '.join(known) or 'none'})")
    recordings_values: list[tuple[str, dict]] = []  # (instrument, absolute per-note values) per recording
    ratios_by_instrument: dict[str, list] = {}
    for index in tqdm(recordings, desc="calibrate", unit="recording", disable=not progress, file=sys.stderr):
        item = dataset[index]
        f0_hz = refine_f0(item["audio"], item["f0_hz"]) if f0_refine else item["f0_hz"]
        instrument = int(known[dataset.recordings[index]["instrument"]])
        controls = model_controls(model, item["audio"], f0_hz, item["loudness_db"], instrument)
        if amplitude_gains is not None:
            measured = chunked_analysis_controls(item["audio"], f0_hz)["amplitude"][0].clamp_min(1e-7)
            sounding = item["loudness_db"] > SOUNDING_DB
            ratios = torch.log(controls["amplitude"][0].clamp_min(1e-7)) - torch.log(measured)
            ratios_by_instrument.setdefault(dataset.recordings[index]["instrument"], []).append(ratios[sounding])
        with torch.no_grad():
            values = note_expression({k: v[0] for k, v in controls.items()}, item["note_index"],
                                     item["notes"][:, 2].float(), len(item["notes"]))
        recordings_values.append((dataset.recordings[index]["instrument"], values))
    if amplitude_gains is not None:
        amplitude_gains.update({name: round(float(torch.cat(parts).median()), 4)
                                for name, parts in ratios_by_instrument.items()})
    medians: dict[str, list[float]] = {}
    for name, values in recordings_values:
        medians.setdefault(name, []).append(float(level_offset(values["volume_db"], values["present"], 0.0)))
    reference_db = {name: round(float(np.median(levels)), 2) for name, levels in medians.items()}
    if references is not None:
        references.update(reference_db)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in (*PHYSICAL_NAMES, LEVEL_OFFSET)}
    for name, values in recordings_values:
        offset = level_offset(values["volume_db"], values["present"], reference_db[name])
        relative = relative_levels(values, offset)
        present = values["present"].numpy()
        for key in collected:
            collected[key].append(relative[key].numpy()[present])
    return {name: np.concatenate(parts) for name, parts in collected.items()}, len(recordings)


def calibrate(model_dir: str | Path, data_dir: str | Path, split: str = "train", progress: bool = True) -> dict:
    """Measure ``model_dir``'s ranges on ``data_dir`` and store them in its config.yaml (atomically).

    Returns the new ``expression_ranges`` (``{control: [low, high]}``).
    """
    from mididdsp.models import load_model, update_model_config

    model = load_model(model_dir)
    gains: dict = {}
    references: dict = {}
    physical, n_recordings = measure_notes(model, data_dir, split, progress, amplitude_gains=gains,
                                           references=references)
    ranges = {name: [low, high] for name, (low, high) in ranges_from_values(physical).items()}
    provenance = {"data": str(data_dir), "split": split, "recordings": n_recordings,
                  "notes": int(len(physical["volume_db"])), "percentiles": list(RANGE_PERCENTILES), "f0_refine": True,
                  "levels": "relative to each recording (level_offset_db)"}
    update_model_config(model_dir, {"expression_ranges": ranges, "expression_calibration": provenance,
                                    "measured_amplitude_gains": gains, "reference_levels_db": references})
    return ranges


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory to calibrate (its config.yaml is updated): a synthesis "
                                      "coder or autoencoder (expression ranges), or an expression prior "
                                      "(velocity -> level fit)")
    parser.add_argument("--data", required=True, help="prepared folder (mididdsp prepare) with the model's data")
    parser.add_argument("--split", default="train", choices=("train", "valid", "test"),
                        help="which recordings to measure (default: train)")


def run(args: argparse.Namespace) -> int:
    from mididdsp.models import read_model_config

    if read_model_config(args.model).get("model_type") == "ExpressionPrior":
        from mididdsp.expression.levels import run_prior

        return run_prior(args)
    ranges = calibrate(args.model, args.data, args.split, progress=sys.stderr.isatty())
    width = max(len(name) for name in ranges)
    from mididdsp.expression.controls import PHYSICAL_OF, PHYSICAL_UNITS

    for name, (low, high) in ranges.items():
        unit = PHYSICAL_UNITS[PHYSICAL_OF[name]]
        print(f"{name:<{width}}  {PHYSICAL_OF[name]} {low:g} .. {high:g} {unit}")
    print(f"wrote expression_ranges to {Path(args.model) / 'config.yaml'}")
    return 0
