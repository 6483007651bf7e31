"""``mididdsp eval prior``: how well an expression prior predicts held-out notes' extracted expression.

On the notes of one split of a prepared folder, against their teacher controls (the note tables of
:mod:`mididdsp.datasets.teacher`: what ``mididdsp extract`` reads from the audio with the synthesis coder):

* RMSE of the deterministic prediction (temperature 0) per scaled control and overall (the root of the mean
  squared error over all six controls and notes), on the [0, 1] scale, beside the RMSE of the per-instrument mean
  of the train split's notes. The vibrato rate's RMSE (Hz) on the notes that have vibrato, beside the same mean.
* Negative log-likelihood per note (nats) of the six scaled controls, as densities on [0, 1]^6: the prior's is
  the sum of its first six teacher-forced log-density terms (the rate is last in its order and never fed back,
  so this is the exact six-control density given the notes and the true controls of the notes before); the
  baseline is a per-instrument diagonal Gaussian fitted to the train notes, truncated to [0, 1] and renormalised
  there (which only helps it: it puts no density outside the scale).
* Sample statistics at temperature 1 (``samples`` draws per note, seeds 0 ..): per-control mean and standard
  deviation, and the 6 x 6 correlation matrix between controls, against the truth.
* Velocity: Pearson r of velocity with the predicted volume (temperature 0, and the temperature-1 samples)
  against the same r in the truth.
* Bound (corpora made by ``mididdsp corpus`` only): the performer draws most of each note's expression at
  random, independent of the notes (CC11 shape, level, depth and peak; vibrato depth, rate and delay), and the
  corpus picks the SoundFont of each recording regardless of its notes. The part of each control that those
  draws explain and the notes cannot is error no prior can remove; see
  :func:`performer_bound`.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from mididdsp.errors import MididdspError
from mididdsp.expression.controls import CONTROL_NAMES
from mididdsp.expression.prior import N_CONTROLS, RATE_INDEX

TARGETS = {"rmse_overall": 0.12, "sample_stat_tolerance": 0.1, "velocity_r_tolerance": 0.05}


# ------------------------------------------------------------------------------------------------ data
def _tables(data_dir: str | Path, folder: Path, split: str, instruments: dict[str, int]) -> list[dict]:
    from mididdsp.datasets.teacher import note_tables
    from mididdsp.datasets.teacher import table_arrays

    tables = []
    for table in note_tables(data_dir, folder, split):
        if table["instrument"] in instruments and len(table["notes"]):
            arrays = table_arrays(table, instruments)
            arrays.update(id=table["id"], name=table["instrument"])
            tables.append(arrays)
    return tables


def _batch(tables: list[dict]) -> dict[str, torch.Tensor]:
    """Recordings -> one padded batch: ``notes`` [R, N, 4], ``note_mask`` [R, N], ``targets`` [R, N, 7],
    ``present`` [R, N], ``instrument`` [R]."""
    count = max(len(t["notes"]) for t in tables)
    rows = len(tables)
    batch = {"notes": torch.zeros(rows, count, 4), "note_mask": torch.zeros(rows, count, dtype=torch.bool),
             "targets": torch.zeros(rows, count, 7), "present": torch.zeros(rows, count, dtype=torch.bool),
             "instrument": torch.tensor([t["instrument"] for t in tables], dtype=torch.long)}
    for row, table in enumerate(tables):
        n = len(table["notes"])
        batch["notes"][row, :n] = torch.from_numpy(table["notes"])
        batch["note_mask"][row, :n] = True
        batch["targets"][row, :n] = torch.from_numpy(table["targets"])
        batch["present"][row, :n] = torch.from_numpy(table["present"])
    return batch


# ------------------------------------------------------------------------------------------------ baselines
def instrument_baseline(tables: list[dict]) -> dict[int, dict[str, np.ndarray]]:
    """Per instrument id: ``mean`` and ``std`` [6] of the scaled controls of the present notes, and
    ``rate_mean`` (Hz) over the notes with vibrato."""
    baseline = {}
    for instrument in sorted({t["instrument"] for t in tables}):
        targets = np.concatenate([t["targets"][t["present"]] for t in tables if t["instrument"] == instrument])
        rates = targets[:, RATE_INDEX][targets[:, RATE_INDEX] > 0]
        baseline[instrument] = {"mean": targets[:, :N_CONTROLS].mean(0),
                                "std": np.maximum(targets[:, :N_CONTROLS].std(0), 1e-3),
                                "rate_mean": float(rates.mean()) if len(rates) else 0.0}
    return baseline


def _normal_cdf(values: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.as_tensor(values, dtype=torch.float64)).numpy()


def truncated_gaussian_log_density(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """log density of N(mean, std) truncated to [0, 1] (renormalised), elementwise; same shapes."""
    z = (x - mean) / std
    mass = _normal_cdf((1.0 - mean) / std) - _normal_cdf(-mean / std)  # the Gaussian's mass inside [0, 1]
    return -0.5 * z ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi) - np.log(np.maximum(mass, 1e-300))


# ------------------------------------------------------------------------------------------------ statistics
def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays (nan when either is constant)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return float("nan")
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def _correlation(values: np.ndarray) -> np.ndarray:
    """[n, 6] -> [6, 6] correlation (0 where a column is constant)."""
    std = values.std(0)
    centred = (values - values.mean(0)) / np.where(std > 0, std, 1.0)
    return (centred.T @ centred) / len(values)


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_prior(model_dir: str | Path, data_dir: str | Path, split: str = "test",
                   coder_dir: str | Path | None = None, samples: int = 8) -> dict:
    """Evaluate the expression prior ``model_dir`` on the notes of ``split`` of ``data_dir`` (see the module
    docstring). ``coder_dir``: the synthesis coder whose teacher cache holds the truth (default: the one the
    prior was trained with, else the shipped coder). Returns a JSON-able dict."""
    from mididdsp.models import load_model, model_metadata
    from mididdsp.datasets.teacher import ensure_teacher

    model = load_model(model_dir, expected=("ExpressionPrior",))
    metadata = model_metadata(model)
    instruments = {str(k): int(v) for k, v in (metadata.get("instruments") or {"default": 0}).items()}
    if coder_dir is None:
        trained_with = (metadata.get("teacher") or {}).get("model")
        coder_dir = trained_with if trained_with and Path(trained_with).is_dir() else None  # None: shipped
    folder = ensure_teacher(data_dir, coder_dir)
    train_tables = _tables(data_dir, folder, "train", instruments)
    tables = _tables(data_dir, folder, split, instruments)
    if not train_tables or not tables:
        raise MididdspError(f"{data_dir}: no notes of the prior's instruments ({', '.join(instruments)}) in the "
                            f"'train' and {split!r} splits of the teacher cache {folder}")
    batch = _batch(tables)
    counted = (batch["note_mask"] & batch["present"]).numpy()
    truth = batch["targets"].numpy()[counted]                                  # [n, 7]
    instrument_of_note = batch["instrument"].numpy()[:, None].repeat(counted.shape[1], 1)[counted]
    velocity = batch["notes"].numpy()[..., 3][counted]
    baseline = instrument_baseline(train_tables)
    missing = sorted(set(instrument_of_note) - set(baseline))
    if missing:
        raise MididdspError(f"{data_dir}: the train split has no notes of instrument id(s) {missing}")
    base_mean = np.stack([baseline[i]["mean"] for i in instrument_of_note])
    base_std = np.stack([baseline[i]["std"] for i in instrument_of_note])
    args = (batch["notes"], batch["note_mask"], batch["instrument"])
    with torch.no_grad():
        predicted = model.sample(*args, temperature=0.0).numpy()[counted]
        drawn = np.concatenate([model.sample(*args, temperature=1.0, seed=s).numpy()[counted]
                                for s in range(samples)])
        terms = model.log_prob_terms(*args, batch["targets"], batch["present"]).numpy()[counted]
    result = {"model": str(model_dir), "data": str(data_dir), "split": split, "teacher": str(folder),
              "recordings": len(tables), "notes": int(counted.sum()), "samples_per_note": samples,
              "point_estimate": model.config.point_estimate}
    result["rmse"] = _rmse(truth, predicted, base_mean, instrument_of_note, baseline)
    result["nll"] = _nll(truth, terms, base_mean, base_std)
    result["samples"] = _sample_statistics(truth[:, :N_CONTROLS], drawn[:, :N_CONTROLS])
    result["velocity"] = _velocity(velocity, truth, predicted, drawn, instrument_of_note, samples)
    result["bound"] = performer_bound(data_dir, folder, instruments, split)
    result["checks"] = _checks(result)
    return _rounded(result)


def _rmse(truth: np.ndarray, predicted: np.ndarray, base_mean: np.ndarray, instrument_of_note: np.ndarray,
          baseline: dict) -> dict:
    model_se = (predicted[:, :N_CONTROLS] - truth[:, :N_CONTROLS]) ** 2
    base_se = (base_mean - truth[:, :N_CONTROLS]) ** 2
    table = {name: {"model": float(np.sqrt(model_se[:, k].mean())),
                    "instrument_mean": float(np.sqrt(base_se[:, k].mean()))}
             for k, name in enumerate(CONTROL_NAMES)}
    table["overall"] = {"model": float(np.sqrt(model_se.mean())), "instrument_mean": float(np.sqrt(base_se.mean()))}
    vibrato = truth[:, RATE_INDEX] > 0
    if vibrato.any():
        rate_mean = np.array([baseline[i]["rate_mean"] for i in instrument_of_note])[vibrato]
        table["vibrato_rate_hz"] = {
            "model": float(np.sqrt(((predicted[vibrato, RATE_INDEX] - truth[vibrato, RATE_INDEX]) ** 2).mean())),
            "instrument_mean": float(np.sqrt(((rate_mean - truth[vibrato, RATE_INDEX]) ** 2).mean())),
            "notes": int(vibrato.sum())}
    return table


def _nll(truth: np.ndarray, terms: np.ndarray, base_mean: np.ndarray, base_std: np.ndarray) -> dict:
    gaussian = truncated_gaussian_log_density(truth[:, :N_CONTROLS].astype(np.float64), base_mean, base_std)
    return {"model": float(-terms[:, :N_CONTROLS].sum(1).mean()),
            "gaussian": float(-gaussian.sum(1).mean()),
            "unit": "nats per note, six scaled controls as a density on [0, 1]^6",
            "model_with_rate": float(-terms.sum(1).mean())}


def _sample_statistics(truth: np.ndarray, drawn: np.ndarray) -> dict:
    truth_corr, drawn_corr = _correlation(truth), _correlation(drawn)
    off = ~np.eye(N_CONTROLS, dtype=bool)
    return {"mean": {n: {"samples": float(drawn[:, k].mean()), "truth": float(truth[:, k].mean())}
                     for k, n in enumerate(CONTROL_NAMES)},
            "std": {n: {"samples": float(drawn[:, k].std()), "truth": float(truth[:, k].std())}
                    for k, n in enumerate(CONTROL_NAMES)},
            "max_mean_error": float(np.abs(drawn.mean(0) - truth.mean(0)).max()),
            "max_std_error": float(np.abs(drawn.std(0) - truth.std(0)).max()),
            "correlation": {"samples": drawn_corr.tolist(), "truth": truth_corr.tolist(),
                            "max_abs_error": float(np.abs(drawn_corr - truth_corr)[off].max()),
                            "mean_abs_error": float(np.abs(drawn_corr - truth_corr)[off].mean())}}


def _velocity(velocity: np.ndarray, truth: np.ndarray, predicted: np.ndarray, drawn: np.ndarray,
              instrument_of_note: np.ndarray, samples: int) -> dict:
    result = {"truth": pearson(velocity, truth[:, 0]), "temperature_0": pearson(velocity, predicted[:, 0]),
              "temperature_1": pearson(np.tile(velocity, samples), drawn[:, 0]), "per_instrument": {}}
    for instrument in sorted(set(instrument_of_note.tolist())):
        rows = instrument_of_note == instrument
        result["per_instrument"][str(instrument)] = {
            "truth": pearson(velocity[rows], truth[rows, 0]),
            "temperature_0": pearson(velocity[rows], predicted[rows, 0]),
            "temperature_1": pearson(np.tile(velocity[rows], samples), drawn[np.tile(rows, samples), 0])}
    return result


def _checks(result: dict) -> dict:
    rmse, tolerance = result["rmse"]["overall"], TARGETS["sample_stat_tolerance"]
    r_tolerance = TARGETS["velocity_r_tolerance"]
    velocity = result["velocity"]
    return {"rmse_overall<=0.12": rmse["model"] <= TARGETS["rmse_overall"],
            "rmse_below_instrument_mean": rmse["model"] < rmse["instrument_mean"],
            "nll_below_gaussian": result["nll"]["model"] < result["nll"]["gaussian"],
            "sample_means_within_0.1": result["samples"]["max_mean_error"] <= tolerance,
            "sample_stds_within_0.1": result["samples"]["max_std_error"] <= tolerance,
            "velocity_r_t0_within_0.05": abs(velocity["temperature_0"] - velocity["truth"]) <= r_tolerance,
            "velocity_r_t1_within_0.05": abs(velocity["temperature_1"] - velocity["truth"]) <= r_tolerance}


# ------------------------------------------------------------------------------------------------ the bound
def _read_truth_csv(path: Path) -> list[dict[str, str]] | None:
    try:
        with open(path, newline="") as file:
            return list(csv.DictReader(file))
    except OSError:
        return None


def _draw_basis(rows: list[dict[str, str]]) -> np.ndarray:
    """The performer's per-note random draws, [n, 14]: CC11 shape (one-hot), level, depth, peak position, mean
    gain; vibrato on/off, depth, rate, delay."""
    from mididdsp.datasets.performer import CC11_SHAPES

    out = []
    for row in rows:
        vibrato = float(row["vibrato_depth_cents"])
        out.append([float(row["cc11_shape"] == shape) for shape in CC11_SHAPES]
                   + [float(row[name]) for name in ("cc11_level_db", "cc11_depth_db", "peak_position", "mean_gain_db")]
                   + [float(vibrato > 0), vibrato, float(row["vibrato_rate_hz"]), float(row["vibrato_delay_s"])])
    return np.asarray(out, dtype=np.float64)


def _recording_soundfont(notes_path: Path) -> str:
    """The SoundFont that played a corpus recording, from its ``NAME.json`` beside ``NAME.notes.csv`` ("" where
    that file cannot be read)."""
    from mididdsp.datasets.corpus import played_by

    info = notes_path.with_name(notes_path.name.removesuffix(".notes.csv") + ".json")
    try:
        return played_by(json.loads(info.read_text()))
    except (OSError, ValueError, AttributeError):
        return ""


def _paired_notes(data_dir: str | Path, folder: Path, instruments: dict[str, int]) -> list[dict]:
    """Recordings whose performer ground truth (``*.notes.csv``) pairs one for one with their teacher notes:
    ``split``, ``features`` [n, F] (what a prior sees: note features and instrument one-hot), ``draws`` [n, D]
    (the performer's 14 and the SoundFont as a one-hot), ``controls`` [n, 6], ``short`` [n] (under 0.25 s: no
    vibrato by the performer's rule), ``instrument``; present notes only."""
    from mididdsp.datasets.shards import load_manifest
    from mididdsp.datasets.teacher import note_tables
    from mididdsp.expression.prior import note_features

    recordings = {r["id"]: r for r in load_manifest(data_dir)["recordings"]}
    paired = []
    for table in note_tables(data_dir, folder, None):
        provenance = (recordings.get(table["id"], {}).get("provenance") or {}).get("notes") or {}
        rows = _read_truth_csv(Path(provenance["path"])) if provenance.get("path") else None
        if rows is None or table["instrument"] not in instruments or not len(table["notes"]):
            continue
        if len(rows) != len(table["notes"]) or not np.allclose(
                [float(r["start"]) for r in rows], table["notes"][:, 0], atol=2e-3):
            continue  # the prepared notes are not the performer's notes one for one: cannot pair them
        notes = torch.from_numpy(np.asarray(table["notes"], np.float32))[None]
        features = note_features(notes, torch.ones(notes.shape[:2], dtype=torch.bool))[0].numpy()
        onehot = np.eye(max(instruments.values()) + 1)[np.full(len(notes[0]), instruments[table["instrument"]])]
        keep = table["present"].astype(bool)
        duration = table["notes"][:, 1] - table["notes"][:, 0]
        paired.append({"split": recordings[table["id"]]["split"], "instrument": instruments[table["instrument"]],
                       "features": np.concatenate([features, onehot], axis=1)[keep],
                       "draws": _draw_basis([r for r, k in zip(rows, keep) if k]),
                       "controls": table["controls"][keep].astype(np.float64), "short": (duration < 0.25)[keep],
                       "soundfont": _recording_soundfont(Path(provenance["path"]))})
    # Which SoundFont played a recording is a draw too (the corpus takes them in turn): the notes do not show it,
    # and the SoundFonts differ in each instrument's level and timbre.
    soundfonts = sorted({p["soundfont"] for p in paired})
    for p in paired:
        played_by = np.zeros((len(p["draws"]), len(soundfonts)))
        played_by[:, soundfonts.index(p["soundfont"])] = 1.0
        p["draws"] = np.concatenate([p["draws"].reshape(len(played_by), -1), played_by], axis=1)
    return paired


def _fit_oracle(inputs: np.ndarray, targets: np.ndarray, steps: int = 1500, seed: int = 0) -> torch.nn.Module:
    """A small MLP ``inputs [n, F] -> targets [n, 6]`` (full-batch Adam, weight decay), trained under a forked,
    seeded RNG (the caller's random state is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        oracle = torch.nn.Sequential(torch.nn.Linear(inputs.shape[1], 64), torch.nn.LeakyReLU(),
                                     torch.nn.Linear(64, 64), torch.nn.LeakyReLU(),
                                     torch.nn.Linear(64, targets.shape[1]))
        optimizer = torch.optim.AdamW(oracle.parameters(), lr=3e-3, weight_decay=1e-3)
        x, y = torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.float32)
        for _ in range(steps):
            loss = ((oracle(x) - y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return oracle.eval()


def performer_bound(data_dir: str | Path, folder: Path, instruments: dict[str, int], split: str = "test",
                    draws_per_note: int = 32, seed: int = 0) -> dict | None:
    """Estimated error floor that the performer's random draws put under any prior (corpora of
    ``mididdsp corpus`` only, where each recording's ``*.notes.csv`` is found; None otherwise).

    The performer draws most of a note's expression at random, independently of the notes: the CC11 shape, level,
    depth and peak, and the vibrato (on/off, depth, rate, delay), except that notes under 0.25 s get no vibrato;
    and the SoundFont that plays a recording is chosen regardless of its notes.
    An oracle ``f(notes, draws)`` (a small MLP on the note features, the instrument and the draws) is fitted on
    the train split's teacher controls. On the notes of ``split``:

    * ``draw_rmse``: ``sqrt(mean over notes of Var over draws' of f(notes, draws'))``, the draws' resampled from
      other notes of the same instrument and the same short/long class: the spread that the draws alone put
      into the controls of notes that are fixed. By the law of total variance, no function of the notes can
      have a lower RMSE (as far as ``f`` is the mean given notes and draws): this is the bound.
    * ``oracle_rmse``: the oracle's own held-out error (extraction noise, the neighbours it does not see, misfit),
      which shows how well ``f`` fits; part of it is unpredictable too, so the true floor lies above the bound."""
    return draw_bound(_paired_notes(data_dir, folder, instruments), split, draws_per_note, seed)


def draw_bound(paired: list[dict], split: str = "test", draws_per_note: int = 32, seed: int = 0) -> dict | None:
    """:func:`performer_bound` on recordings already paired with their draws (the items of ``_paired_notes``:
    ``split``, ``instrument``, ``features`` [n, F], ``draws`` [n, D], ``controls`` [n, 6], ``short`` [n])."""
    train = [p for p in paired if p["split"] == "train"]
    held = [p for p in paired if p["split"] == split]
    if not train or not held:
        return None
    stack = lambda items, key: np.concatenate([p[key] for p in items])  # noqa: E731
    draws_all = stack(paired, "draws")
    centre, scale = draws_all.mean(0), np.maximum(draws_all.std(0), 1e-9)
    oracle = _fit_oracle(np.concatenate([stack(train, "features"), (stack(train, "draws") - centre) / scale], 1),
                         stack(train, "controls"), seed=seed)
    features, controls = stack(held, "features"), stack(held, "controls")
    with torch.no_grad():
        fitted = oracle(torch.as_tensor(np.concatenate([features, (stack(held, "draws") - centre) / scale], 1),
                                        dtype=torch.float32)).numpy()
        # Resample the draws among notes of the same instrument and short/long class (all splits).
        instrument_all = np.concatenate([np.full(len(p["draws"]), p["instrument"]) for p in paired])
        short_all = stack(paired, "short")
        instrument_held = np.concatenate([np.full(len(p["draws"]), p["instrument"]) for p in held])
        short_held = stack(held, "short")
        rng = np.random.default_rng(seed)
        spread = np.zeros_like(controls)
        for key in set(zip(instrument_held.tolist(), short_held.tolist())):
            rows = (instrument_held == key[0]) & (short_held == key[1])
            pool = draws_all[(instrument_all == key[0]) & (short_all == key[1])]
            picks = pool[rng.integers(0, len(pool), (int(rows.sum()), draws_per_note))]  # [r, K, D]
            inputs = np.concatenate([np.repeat(features[rows][:, None], draws_per_note, 1),
                                     (picks - centre) / scale], -1)
            outputs = oracle(torch.as_tensor(inputs, dtype=torch.float32)).numpy()
            spread[rows] = outputs.var(axis=1)
    oracle_se, draw_var = (fitted - controls) ** 2, spread
    table = {}
    for k, name in enumerate((*CONTROL_NAMES, "overall")):
        o = oracle_se[:, k].mean() if k < N_CONTROLS else oracle_se.mean()
        d = draw_var[:, k].mean() if k < N_CONTROLS else draw_var.mean()
        table[name] = {"draw_rmse": float(np.sqrt(d)), "oracle_rmse": float(np.sqrt(o))}
    return {"split": split, "train_notes": int(len(stack(train, "controls"))), "held_out_notes": int(len(controls)),
            "rmse": table}


# ------------------------------------------------------------------------------------------------ report
def format_prior_report(result: dict) -> str:
    """The result of :func:`evaluate_prior` as a plain-text report."""
    lines = [f"expression prior {result['model']} on {result['split']} of {result['data']}: "
             f"{result['notes']} notes in {result['recordings']} recordings",
             f"RMSE on the [0, 1] scale (temperature 0 = {result['point_estimate']}):",
             f"  {'control':22s} {'prior':>7s} {'inst. mean':>10s}"
             + (f" {'bound':>7s}" if result.get("bound") else "")]
    bound = {name: row["draw_rmse"] for name, row in ((result.get("bound") or {}).get("rmse") or {}).items()}
    for name in (*CONTROL_NAMES, "overall"):
        row = result["rmse"][name]
        extra = f" {bound[name]:7.3f}" if name in bound else ""
        lines.append(f"  {name:22s} {row['model']:7.3f} {row['instrument_mean']:10.3f}{extra}")
    if "vibrato_rate_hz" in result["rmse"]:
        row = result["rmse"]["vibrato_rate_hz"]
        lines.append(f"  {'vibrato_rate_hz (Hz)':22s} {row['model']:7.3f} {row['instrument_mean']:10.3f}"
                     f"   ({row['notes']} notes with vibrato)")
    nll = result["nll"]
    lines.append(f"NLL per note ({nll['unit']}): prior {nll['model']:.3f}, per-instrument Gaussian "
                 f"{nll['gaussian']:.3f}")
    samples = result["samples"]
    lines.append(f"samples at temperature 1 ({result['samples_per_note']} per note): mean / std, samples vs truth")
    for name in CONTROL_NAMES:
        mean, std = samples["mean"][name], samples["std"][name]
        lines.append(f"  {name:22s} {mean['samples']:.3f} / {std['samples']:.3f}   vs {mean['truth']:.3f} / "
                     f"{std['truth']:.3f}")
    lines.append(f"  largest error: mean {samples['max_mean_error']:.3f}, std {samples['max_std_error']:.3f}; "
                 f"control correlations: largest error {samples['correlation']['max_abs_error']:.3f}, "
                 f"mean {samples['correlation']['mean_abs_error']:.3f}")
    velocity = result["velocity"]
    lines.append(f"velocity-volume r: truth {velocity['truth']:.3f}, prior temperature 0 "
                 f"{velocity['temperature_0']:.3f}, temperature 1 {velocity['temperature_1']:.3f}")
    if result.get("bound"):
        rmse = result["bound"]["rmse"]["overall"]
        lines.append(f"bound: the performer's random draws alone leave any prior an RMSE of at least "
                     f"{rmse['draw_rmse']:.3f} overall on these {result['bound']['held_out_notes']} notes "
                     f"(oracle knowing the draws: {rmse['oracle_rmse']:.3f})")
    lines.append("checks: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["checks"].items()))
    return "\n".join(lines)
