"""How well does expression extraction recover the expression a performer put in? Scored on the SoundFont corpus.

    python benchmarks/eval_expression.py MODEL_DIR CORPUS_DIR [--controls model|analysis] [--prepared DIR]
                                         [--split heldout|all] [--max-recordings N] [--per-note OUT.csv]

For each recording (NAME.wav + NAME.mid + NAME.notes.csv; held-out ones first: the valid/test splits of
``--prepared``'s manifest.json when it exists), the table of ``mididdsp extract`` is compared note by note
with the ground truth the performer wrote into the MIDI (:mod:`mididdsp.datasets.performer`):

  * vibrato: Pearson r of ``vibrato_extent_cents`` vs the applied pitch-bend depth (all notes, depth 0 where none
    was applied); the median |rate error| in Hz on notes with applied and
    detected vibrato (all, and notes of at least 0.5 s); detection rates (extent >= 3 cents);
  * volume: r of ``volume_db`` vs the applied gain in dB, ``40 log10(velocity / 127) + mean CC11 gain`` (the
    SoundFont law the corpus measured for both velocity and CC11: ``performer.cc11_to_db``);
  * peak position: r of ``peak_position`` vs the applied swell's peak position (swell-shaped notes only);
  * volume fluctuation: r of ``volume_fluctuation_db`` vs the applied CC11 depth (dB) (a side check).

``--reference neutral`` (needs FluidSynth) scores against the expression the audio really carries: every
recording's MIDI is rendered again without its expression (velocity 127, CC11 127, no pitch bend), the same
controls are measured on that neutral render, and the performer's exactly known changes are applied to them:
amplitude and noise magnitudes times ``10 ** (cc11_db(t) / 20)``, f0 times ``2 ** (bend(t) / 12)``. The neutral
render keeps each note's velocity (the same SoundFont sample layer); with ``--neutral-velocity 127`` it plays
every note at 127 and the velocity law ``40 log10(velocity / 127)`` dB is applied as a gain as well. The six controls of those expected frame controls are the reference. This removes what
the SoundFont's samples do by themselves (per-key levels, attack shapes, the violin and cello samples' own
5-20 cent pitch wobble at 5-6 Hz) and leaves what extraction is asked to recover: the expression the performer
added. Both references are reported in docs/RESULTS.md.

``--reference written`` (vibrato only) scores the extent against the pitch curve the MIDI file itself writes
(each note's pitch times its bends, measured by the same extractor with no audio): the performer's vibrato as
the extractor's definition counts it, without the samples' own wobble and without CREPE.

Targets: r >= 0.95 for vibrato extent and volume, >= 0.9 for peak position, rate within 0.5 Hz. FluidR3's violin and
cello samples carry their own 5-20 cent pitch wobble at 5-6 Hz, so their vibrato scores mix the written vibrato
with the samples'; per-instrument rows show it. ``--controls analysis`` measures the controls from the audio
(CREPE f0, A-weighted loudness) instead of a model's network, and needs no model (pass ``-`` as MODEL_DIR).
With ``--prepared``, CREPE f0 and loudness are read from the recording's feature shard when it has one (the same
analysis, computed once by ``mididdsp prepare``) instead of being computed again. The f0 is then refined as
``mididdsp extract`` refines it (:func:`mididdsp.pitch.refine_f0`), unless ``--no-f0-refine``.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table as markdown_table  # noqa: E402

def absolute(table, row: int, column: str) -> float:
    """A table value, levels (volume_db, attack_noise_db) made absolute again by adding the recording's
    level_offset_db: the applied gains are compared across recordings."""
    value = float(table[row, column])
    return value + float(table[row, "level_offset_db"]) if column in ("volume_db", "attack_noise_db") else value


MATCH_TOLERANCE_S = 0.006
DETECTED_CENTS = 3.0  # a note "has vibrato" when its extent reaches this (the gate's ramps leave small values)


def recordings(corpus: Path, prepared: Path | None, split: str) -> list[tuple[str, str, str]]:
    """(name, instrument, split) of the corpus recordings, held-out (valid, test) first."""
    names = sorted(p.name[:-len(".notes.csv")] for p in corpus.glob("*.notes.csv"))
    splits: dict[str, str] = {}
    manifest = prepared / "manifest.json" if prepared else None
    if manifest and manifest.is_file():
        for entry in json.loads(manifest.read_text())["recordings"]:
            splits[entry["id"].split("/", 1)[-1]] = entry.get("split", "train")
    found = []
    for name in names:
        info = corpus / f"{name}.json"
        instrument = json.loads(info.read_text())["instrument"] if info.is_file() else name.rsplit("_", 1)[0]
        found.append((name, instrument, splits.get(name, "unknown")))
    order = {"test": 0, "valid": 1, "unknown": 2, "train": 3}
    found.sort(key=lambda item: (order.get(item[2], 2), item[0]))
    if split == "heldout" and splits:
        found = [item for item in found if item[2] in ("valid", "test")]
    return found


@functools.lru_cache(maxsize=None)
def soundfont_paths(corpus: Path) -> dict[str, str]:
    """SoundFont file name -> path, from the corpus manifest (read once per corpus)."""
    from mididdsp.datasets.corpus import DEFAULT_SOUNDFONT

    manifest = json.loads((corpus / "manifest.json").read_text()) if (corpus / "manifest.json").is_file() else {}
    listed = manifest.get("soundfont", DEFAULT_SOUNDFONT)
    return {Path(path).name: path for path in ([listed] if isinstance(listed, str) else listed)}


def soundfont_of(corpus: Path, name: str) -> str:
    """The path of the SoundFont that played recording ``name`` (its entry names it; the corpus manifest has the
    paths), for re-rendering it neutrally with the same samples."""
    paths = soundfont_paths(corpus)
    info = corpus / f"{name}.json"
    played_by = json.loads(info.read_text()).get("soundfont") if info.is_file() else None
    return paths.get(played_by, next(iter(paths.values())))


def shard_features(prepared: Path | None, name: str):
    """f0/confidence/loudness [T] tensors from the recording's shard in ``prepared``, or None."""
    if prepared is None or not (prepared / "shards").is_dir():
        return None
    import torch

    matches = sorted((prepared / "shards").glob(f"corpus_{name}-*.npz"))
    if not matches:
        return None
    with np.load(matches[0], allow_pickle=False) as shard:
        return {key: torch.from_numpy(np.array(shard[key], dtype=np.float32))
                for key in ("f0_hz", "confidence", "loudness_db")}


def ground_truth(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def match_notes(table, truth: list[dict]) -> list[tuple[int, dict]]:
    """Pairs (table row, ground-truth note) with the same pitch and start within 6 ms."""
    starts, pitches = table.start, table.pitch
    pairs = []
    for note in truth:
        candidates = np.flatnonzero((np.abs(starts - float(note["start"])) < MATCH_TOLERANCE_S)
                                    & (pitches == int(note["pitch"])))
        if len(candidates):
            pairs.append((int(candidates[0]), note))
    return pairs


def neutral_midi(score_, path: Path, velocity: int | None = None) -> None:
    """Write ``score_`` without its expression: no CC11 (127), no pitch bend, velocities kept or all ``velocity``."""
    import dataclasses

    from mididdsp.score import Note

    tracks = [dataclasses.replace(track, notes=[Note(n.start, n.end, n.pitch, velocity or n.velocity)
                                                for n in track.notes],
                                  pitch_bends=[], controls={cc: v for cc, v in track.controls.items() if cc != 11})
              for track in score_.tracks]
    dataclasses.replace(score_, tracks=tracks).write_midi(path)


def expected_controls(score_, neutral: dict, velocity_applied: bool) -> dict:
    """Neutral-render controls [1, T, ...] + the score's CC11, bends (and velocity gain when the neutral render
    played every note at velocity 127: ``velocity_applied``) -> the expected controls."""
    import torch

    from mididdsp.datasets.performer import cc11_to_db
    from mididdsp.score import note_frames

    track = score_.tracks[0]
    frames = neutral["f0_hz"].shape[1]
    steps = track.control_frames(frames)
    gain_db = cc11_to_db(steps["cc11"])
    if velocity_applied:
        velocity = note_frames(track.notes, frames)["velocity"]
        held = np.maximum.accumulate(np.where(velocity > 0, np.arange(frames), 0))  # releases keep the last one
        velocity = velocity[held]
        gain_db = gain_db + np.where(velocity > 0, cc11_to_db(np.maximum(velocity, 1)), 0.0)
    gain = torch.from_numpy(10.0 ** (gain_db / 20.0)).float()[None]
    bend = torch.from_numpy(2.0 ** (steps["pitch_bend"].astype(np.float64) / 12.0)).float()[None]
    out = dict(neutral)
    out["amplitude"] = neutral["amplitude"] * gain
    out["noise_magnitudes"] = neutral["noise_magnitudes"] * gain.unsqueeze(-1)
    out["f0_hz"] = neutral["f0_hz"] * bend
    return out


def pearson(x: list[float], y: list[float]) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def score_neutral(rows: list[dict]) -> dict:
    """Metrics against the neutral-render reference (``expected_*`` columns)."""
    vib = [r for r in rows if r["expected_extent"] >= DETECTED_CENTS and r["extent"] >= DETECTED_CENTS]
    swell = [r for r in rows if r["shape"] == "swell"]
    metric = {"notes": len(rows)}
    metric["vibrato r"] = pearson([r["extent"] for r in rows], [r["expected_extent"] for r in rows])
    metric["rate err (Hz, median)"] = (float(np.median([abs(r["rate"] - r["expected_rate"]) for r in vib]))
                                       if vib else float("nan"))
    metric["volume r"] = pearson([r["volume_db"] for r in rows], [r["expected_volume_db"] for r in rows])
    metric["peak r (swell)"] = pearson([r["peak"] for r in swell], [r["expected_peak"] for r in swell])
    metric["fluct. r"] = pearson([r["fluct_db"] for r in rows], [r["expected_fluct_db"] for r in rows])
    metric["brightness r"] = pearson([r["brightness"] for r in rows], [r["expected_brightness"] for r in rows])
    metric["attack r"] = pearson([r["attack_db"] for r in rows], [r["expected_attack_db"] for r in rows])
    return metric


def written_vibrato(score_, controls: dict):
    """The table of the pitch curve the MIDI writes: f0 = each note's pitch x its pitch bends, no audio.

    Its vibrato extent is what the performer's bends amount to under the extractor's own definition (delays,
    fade-ins and short notes included), free of the SoundFont's samples and of CREPE."""
    import torch

    from mididdsp.expression.extract import expression_table
    from mididdsp.score import note_frames

    track = score_.tracks[0]
    frames = controls["f0_hz"].shape[1]
    pitch = note_frames(track.notes, frames)["pitch"].astype(np.float64)
    pitch = np.where(pitch > 0, pitch, 69.0)
    bend = track.control_frames(frames)["pitch_bend"].astype(np.float64)
    f0_hz = 440.0 * 2.0 ** ((pitch - 69.0 + bend) / 12.0)
    return expression_table(score_, {"f0_hz": torch.from_numpy(f0_hz).float()[None],
                                     "amplitude": controls["amplitude"]}, "written")


def score_written(rows: list[dict]) -> dict:
    """Vibrato against the written pitch curve (``--reference written``)."""
    vib = [r for r in rows if r["expected_extent"] >= DETECTED_CENTS and r["extent"] >= DETECTED_CENTS]
    return {"notes": len(rows),
            "vibrato r": pearson([r["extent"] for r in rows], [r["expected_extent"] for r in rows]),
            "rate err (Hz, median)": (float(np.median([abs(r["rate"] - r["expected_rate"]) for r in vib]))
                                      if vib else float("nan")),
            "written vs applied r": pearson([r["expected_extent"] for r in rows], [r["true_depth"] for r in rows])}


def scale_coverage(tables: list, ranges: dict | None) -> list[dict]:
    """How much of [0, 1] each scaled control uses: min-max (5th-95th percentile) with the fixed ranges and with
    the tables' own (the model's) ranges, over all notes and over the held-out recordings' notes."""
    import torch

    from mididdsp.expression.controls import CONTROL_NAMES, PHYSICAL_OF, scale_control

    def spread(values: np.ndarray) -> str:
        if not len(values):
            return "-"
        p5, p95 = np.percentile(values, [5, 95])
        return f"{values.min():.2f}-{values.max():.2f} ({p5:.2f}-{p95:.2f})"

    out = []
    held_out = [t for t, split in tables if split in ("valid", "test")]
    for name in CONTROL_NAMES:
        physical = np.concatenate([t[PHYSICAL_OF[name]] for t, _ in tables])
        fixed = scale_control(name, torch.from_numpy(physical)).numpy()
        own = np.concatenate([t[name] for t, _ in tables])
        held = np.concatenate([t[name] for t in held_out]) if held_out else np.zeros(0)
        out.append({"control": name, "fixed ranges": spread(fixed),
                    "model's ranges": spread(own) if ranges else "-",
                    "model's ranges, held-out": spread(held) if ranges else "-"})
    return out


def score(rows: list[dict]) -> dict:
    """Metrics over per-note rows (see the module docstring)."""
    with_vibrato = [r for r in rows if r["true_depth"] > 0]
    without = [r for r in rows if r["true_depth"] == 0]
    detected = [r for r in with_vibrato if r["extent"] >= DETECTED_CENTS]
    swell = [r for r in rows if r["shape"] == "swell"]
    rate_errors = [abs(r["rate"] - r["true_rate"]) for r in detected]
    long_errors = [abs(r["rate"] - r["true_rate"]) for r in detected if r["duration"] >= 0.5]
    return {
        "notes": len(rows),
        "vibrato r": pearson([r["extent"] for r in rows], [r["true_depth"] for r in rows]),
        "rate err (Hz, median)": float(np.median(rate_errors)) if rate_errors else float("nan"),
        "rate err >= 0.5 s": float(np.median(long_errors)) if long_errors else float("nan"),
        "detected": len(detected) / max(1, len(with_vibrato)),
        "false vib.": sum(r["extent"] >= DETECTED_CENTS for r in without) / max(1, len(without)),
        "volume r": pearson([r["volume_db"] for r in rows], [r["true_gain_db"] for r in rows]),
        "peak r (swell)": pearson([r["peak"] for r in swell], [r["true_peak"] for r in swell]),
        "fluct. r": pearson([r["fluct_db"] for r in rows], [r["true_depth_db"] for r in rows]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model directory (ignored with --controls analysis; pass -)")
    parser.add_argument("corpus", help="SoundFont corpus directory (mididdsp corpus)")
    parser.add_argument("--controls", choices=("mixed", "model", "analysis"), default="mixed",
                        help="the extractor: mixed (mididdsp extract's default), model or analysis")
    parser.add_argument("--prepared", default=None,
                        help="prepared dataset (manifest.json for the splits, shards for cached f0/loudness); "
                             "default: CORPUS/../prepared when it exists")
    parser.add_argument("--split", choices=("heldout", "all"), default="all",
                        help="only the held-out recordings, or all (held-out ones first; default all)")
    parser.add_argument("--max-recordings", type=int, default=None)
    parser.add_argument("--reference", choices=("applied", "neutral", "written"), default="applied",
                        help="score against the performer's applied parameters (default), against the "
                             "controls of a neutral re-render plus the applied changes (needs FluidSynth), or "
                             "(vibrato only) against the extent of the pitch curve the MIDI writes")
    parser.add_argument("--neutral-velocity", choices=("keep", "127"), default="keep",
                        help="the neutral render keeps each note's velocity (default: same SoundFont sample "
                             "layer, so only CC11 and bends are applied) or plays all at 127 and applies the "
                             "velocity law as a gain too")
    parser.add_argument("--no-f0-refine", dest="f0_refine", action="store_false",
                        help="CREPE's f0 as it is (default: refined, as mididdsp extract does)")
    parser.add_argument("--per-note", default=None, help="also write the per-note comparison to this CSV")
    args = parser.parse_args(argv)

    import torch

    from mididdsp.audio import load_audio
    from mididdsp.datasets.corpus import render_midi
    from mididdsp.datasets.performer import cc11_to_db
    from mididdsp.expression.extract import (chunked_analysis_controls, expression_table, mixed_controls,
                                             model_controls, model_ranges)
    from mididdsp.models import load_model, model_metadata
    from mididdsp.pitch import refine_f0
    from mididdsp.resynth import analyse, instrument_id
    from mididdsp.score import read_midi

    corpus = Path(args.corpus)
    prepared = Path(args.prepared) if args.prepared else corpus.parent / "prepared"
    prepared = prepared if prepared.is_dir() else None
    model = None
    if args.controls != "analysis":
        model = load_model(args.model)
    items = recordings(corpus, prepared, args.split)[:args.max_recordings]

    def controls_for(audio, f0_hz, loudness_db, instrument):
        if model is not None:
            known = model_metadata(model).get("instruments") or {}
            ids, label = instrument_id(model, instrument if instrument in known else None)
            source = mixed_controls if args.controls == "mixed" else model_controls
            return source(model, audio, f0_hz, loudness_db, ids), label
        return chunked_analysis_controls(audio, f0_hz), instrument

    rows: list[dict] = []
    tables: list = []  # (table, split) per recording, for the scale's coverage
    ranges = model_ranges(model) if model is not None else None
    began = time.perf_counter()
    for name, instrument, split in items:
        audio = load_audio(corpus / f"{name}.wav")
        score_ = read_midi(corpus / f"{name}.mid")
        features = shard_features(prepared, name)
        if features is None or len(features["f0_hz"]) != len(audio) // 64 + 1:
            f0_hz, confidence, loudness_db = analyse(audio, refine=args.f0_refine)
        else:
            f0_hz, loudness_db = features["f0_hz"], features["loudness_db"]
            if args.f0_refine:
                f0_hz = refine_f0(audio, f0_hz)
        controls, label = controls_for(audio, f0_hz, loudness_db, instrument)
        table = expression_table(score_, controls, label, ranges)
        tables.append((table, split))
        expected = None
        if args.reference == "neutral":
            with tempfile.TemporaryDirectory() as temp:
                neutral_midi(score_, Path(temp) / "neutral.mid", 127 if args.neutral_velocity == "127" else None)
                neutral_audio = render_midi(Path(temp) / "neutral.mid", soundfont_of(corpus, name),
                                            duration_s=len(audio) / 16000)
            n_f0, _, n_loudness = analyse(neutral_audio, refine=args.f0_refine)
            neutral, _ = controls_for(neutral_audio, n_f0, n_loudness, instrument)
            expected = expression_table(
                score_, expected_controls(score_, neutral, args.neutral_velocity == "127"), label)
        written = written_vibrato(score_, controls) if args.reference == "written" else None
        for row, note in match_notes(table, ground_truth(corpus / f"{name}.notes.csv")):
            rows.append({
                "recording": name, "instrument": instrument, "split": split,
                "start": float(note["start"]), "pitch": int(note["pitch"]),
                "duration": float(note["end"]) - float(note["start"]),
                "extent": float(table[row, "vibrato_extent_cents"]), "rate": float(table[row, "vibrato_rate_hz"]),
                "true_depth": float(note["vibrato_depth_cents"]), "true_rate": float(note["vibrato_rate_hz"]),
                "volume_db": absolute(table, row, "volume_db"),
                "true_gain_db": float(cc11_to_db(int(note["velocity"]))) + float(note["mean_gain_db"]),
                "peak": float(table[row, "peak_position"]), "true_peak": float(note["peak_position"]),
                "shape": note["cc11_shape"], "fluct_db": float(table[row, "volume_fluctuation_db"]),
                "true_depth_db": float(note["cc11_depth_db"]),
                "brightness": float(table[row, "brightness_centroid"]), "attack_db": absolute(table, row, "attack_noise_db"),
            })
            if written is not None:
                rows[-1]["expected_extent"] = float(written[row, "vibrato_extent_cents"])
                rows[-1]["expected_rate"] = float(written[row, "vibrato_rate_hz"])
            if expected is not None:
                rows[-1].update({f"expected_{key}": absolute(expected, row, column) for key, column in (
                    ("extent", "vibrato_extent_cents"), ("rate", "vibrato_rate_hz"), ("volume_db", "volume_db"),
                    ("peak", "peak_position"), ("fluct_db", "volume_fluctuation_db"),
                    ("brightness", "brightness_centroid"), ("attack_db", "attack_noise_db"))})
        print(f"{name} ({split}): {len(table)} notes", file=sys.stderr)
    seconds = time.perf_counter() - began

    groups = {"all": rows, "notes >= 0.5 s": [r for r in rows if r["duration"] >= 0.5]}
    for instrument in sorted({r["instrument"] for r in rows}):
        groups[instrument] = [r for r in rows if r["instrument"] == instrument]
    held_out = [r for r in rows if r["split"] in ("valid", "test")]
    if held_out and len(held_out) < len(rows):
        groups["held-out (valid+test)"] = held_out
    results = []
    for label, group in groups.items():
        metrics = {"applied": score, "neutral": score_neutral, "written": score_written}[args.reference](group)
        results.append({"group": label, **{k: (f"{v:.3f}" if isinstance(v, float) and not math.isnan(v) else
                                               ("-" if isinstance(v, float) else v)) for k, v in metrics.items()}})
    source = "analysis (CREPE f0, A-weighted loudness, STFT harmonics)" if model is None else f"{args.controls} {args.model}"
    print(f"\nExpression extraction vs the corpus ground truth ({args.reference} reference); controls: {source}; "
          f"{len(items)} recordings, {len(rows)} notes, {seconds:.0f} s\n")
    columns = {"applied": ["group", "notes", "vibrato r", "rate err (Hz, median)", "rate err >= 0.5 s", "detected",
                           "false vib.", "volume r", "peak r (swell)", "fluct. r"],
               "neutral": ["group", "notes", "vibrato r", "rate err (Hz, median)", "volume r", "peak r (swell)",
                           "fluct. r", "brightness r", "attack r"],
               "written": ["group", "notes", "vibrato r", "rate err (Hz, median)", "written vs applied r"]
               }[args.reference]
    print(markdown_table(results, columns))
    print(f"\nScaled controls over the notes, min-max (5th-95th percentile): the fixed ranges, and "
          f"{'the model' if ranges else 'no model'}'s ranges (all notes; held-out notes)\n")
    print(markdown_table(scale_coverage(tables, ranges), ["control", "fixed ranges", "model's ranges",
                                                          "model's ranges, held-out"]))
    if args.per_note:
        with open(args.per_note, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
