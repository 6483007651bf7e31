"""Velocity -> a track's level for renders from the expression prior: the fit ``mididdsp calibrate PRIOR_DIR`` stores.

    mididdsp calibrate mididdsp/pretrained/midi/prior --data data/prepared     # part of `make model-midi`

Expression tables store ``volume_db`` and ``attack_noise_db`` relative to their recording, and the recording's own
level apart (``level_offset_db``, :mod:`mididdsp.expression.controls`). The prior learns the relative levels; a
render from the prior has no recording, so its offset must come from the notes. In the training corpus a
recording's level follows its performer's velocities, so the offset is fitted against them, per recording::

    level_offset_db(recording) = intercept[instrument] + slope * velocity_level_db(its notes' velocities)

``velocity_level_db`` is the mean over the recording's notes of ``40 log10(velocity / 127)`` (the General MIDI
velocity law, dB): a recording-level statistic, like the offset (one number per recording), so the fit measures
how recordings differ, not how notes within one do (that is the prior's part). ``slope`` is shared by the
instruments (least squares on each instrument's recordings centred on their own means), ``intercept`` per
instrument. Shared because it predicts better: on the shipped corpus's 137 training recordings (9-12 per
instrument, whose mean velocity spans only about 2 dB of standard deviation) leaving each recording out gave an
RMS error of 1.94 dB for the shared slope, 2.18 dB for a slope per instrument (3.08 dB for no velocity term), and
on the 23 held-out recordings 1.68 against 1.78 dB (2.64 dB with offset 0).

At render time (:meth:`VelocityLevels.track_offset_db`) the unit is the track (a recording was one track of one
instrument; a track's voices share its performer's dynamic), and its offset puts the track's median note level
(``volume_db + level_offset_db``) where the fit puts a recording with these velocities::

    level_offset_db(track) = intercept + slope * velocity_level_db(track) - (median volume_db - reference_db)

``reference_db`` is the instrument's reference level: every training recording's relative levels have their
median there (by construction of the offset). The prior's output should too, but it does not: it sees a window of
notes, not the recording's mean velocity, so part of the across-recording level leaks into its relative levels
(the shipped prior's tables move 12-18 dB between a phrase at velocity 40 and at 110). Adding the fit on top of
that would count the velocity twice (30-35 dB, where the recordings show 17-18 dB: within and across recordings
their level moves by 0.95-0.99 dB per dB of ``40 log10(velocity / 127)``); re-centring the track on the reference
keeps the prior's note-to-note shape and takes the track's level from the recordings.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from mididdsp.errors import MididdspError, ModelError

CONFIG_KEY = "velocity_levels"
STATISTIC = "mean over the notes of 40 log10(velocity / 127), dB"
MIN_RECORDINGS = 3  # per instrument: fewer cannot place an intercept beside a slope


def velocity_level_db(velocities) -> float:
    """Velocities (MIDI 1..127, [notes]) -> the mean of ``40 log10(velocity / 127)`` over them (dB, <= 0)."""
    values = np.clip(np.asarray(velocities, dtype=np.float64), 1.0, 127.0)
    if values.size == 0:
        raise MididdspError("velocity_level_db: no notes")
    return float(np.mean(40.0 * np.log10(values / 127.0)))


@dataclasses.dataclass(frozen=True)
class Recording:
    """One training recording as the fit sees it: its instrument, ``velocity_db`` (:func:`velocity_level_db` of its
    notes), ``offset_db`` (its ``level_offset_db``) and ``reference_db`` (the median of its relative ``volume_db``:
    its instrument's reference level)."""

    instrument: str
    velocity_db: float
    offset_db: float
    reference_db: float


def _pooled_slope(groups: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Least-squares slope shared by groups of (x [n], y [n]), each centred on its own means."""
    numerator = denominator = 0.0
    for x, y in groups:
        numerator += float(np.sum((x - x.mean()) * (y - y.mean())))
        denominator += float(np.sum((x - x.mean()) ** 2))
    if denominator <= 0.0:
        raise MididdspError("velocity levels: every instrument's recordings have the same mean velocity; "
                            "no slope can be fitted")
    return numerator / denominator


def fit_velocity_levels(recordings: Iterable[Recording]) -> dict:
    """The fit described in the module docstring, as the config entry :data:`CONFIG_KEY` holds it::

        {"statistic": str, "slope": float (dB per dB), "residual_db": RMS of the fit's residuals,
         "leave_one_out_db": {"shared_slope": ..., "slope_per_instrument": ..., "no_velocity": ...} (RMS errors of
         each recording's offset predicted from the others of its instrument),
         "instruments": {name: {"intercept_db", "reference_db", "recordings", "slope_alone" (its own least-squares
                                slope), "r" (correlation of its offsets with its velocity statistic)}}}

    MididdspError when an instrument has fewer than :data:`MIN_RECORDINGS` recordings."""
    by_instrument: dict[str, list[Recording]] = {}
    for recording in recordings:
        by_instrument.setdefault(recording.instrument, []).append(recording)
    if not by_instrument:
        raise MididdspError("velocity levels: no recordings to fit")
    few = {name: len(group) for name, group in by_instrument.items() if len(group) < MIN_RECORDINGS}
    if few:
        raise MididdspError(f"velocity levels: {', '.join(f'{n} has {c}' for n, c in sorted(few.items()))} "
                            f"recording(s); expected at least {MIN_RECORDINGS} per instrument")
    arrays = {name: (np.array([r.velocity_db for r in group]), np.array([r.offset_db for r in group]))
              for name, group in sorted(by_instrument.items())}
    slope = _pooled_slope(arrays.values())
    instruments, residuals = {}, []
    for name, (x, y) in arrays.items():
        intercept = float(y.mean() - slope * x.mean())
        residuals.append(y - intercept - slope * x)
        spread = x.std() > 0 and y.std() > 0
        instruments[name] = {
            "intercept_db": round(intercept, 3),
            "reference_db": round(float(np.median([r.reference_db for r in by_instrument[name]])), 3),
            "recordings": len(x),
            "slope_alone": round(float(np.polyfit(x, y, 1)[0]), 3) if x.std() > 0 else None,
            "r": round(float(np.corrcoef(x, y)[0, 1]), 3) if spread else None}
    return {"statistic": STATISTIC, "slope": round(slope, 4),
            "residual_db": round(float(np.sqrt(np.mean(np.concatenate(residuals) ** 2))), 3),
            "leave_one_out_db": _leave_one_out(arrays), "instruments": instruments}


def _leave_one_out(arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """RMS error (dB) of each recording's offset predicted by fits without it: shared slope, a slope per instrument,
    and no velocity term (the instrument's mean offset). Why the shared slope was chosen (module docstring)."""
    errors: dict[str, list[float]] = {"shared_slope": [], "slope_per_instrument": [], "no_velocity": []}
    for name, (x, y) in arrays.items():
        for left_out in range(len(x)):
            keep = np.arange(len(x)) != left_out
            xs, ys = x[keep], y[keep]
            others = [pair for other, pair in arrays.items() if other != name]
            slope = _pooled_slope([*others, (xs, ys)])
            errors["shared_slope"].append(y[left_out] - (ys.mean() + slope * (x[left_out] - xs.mean())))
            own = np.polyfit(xs, ys, 1) if xs.std() > 0 else np.array([0.0, ys.mean()])
            errors["slope_per_instrument"].append(y[left_out] - np.polyval(own, x[left_out]))
            errors["no_velocity"].append(y[left_out] - ys.mean())
    return {key: round(float(np.sqrt(np.mean(np.square(values)))), 3) for key, values in errors.items()}


@dataclasses.dataclass(frozen=True)
class VelocityLevels:
    """A model's fit (:data:`CONFIG_KEY` of the prior's config.yaml), ready for renders."""

    slope: float
    intercepts_db: dict
    references_db: dict

    @classmethod
    def from_config(cls, entry, source: str = "config.yaml") -> "VelocityLevels | None":
        """The fit from a config entry, or None where the model has none (its renders keep offset 0). ModelError
        naming ``source`` for an entry that is not a fit."""
        if entry is None:
            return None
        try:
            slope = float(entry["slope"])
            intercepts = {name: float(values["intercept_db"]) for name, values in entry["instruments"].items()}
            references = {name: float(values["reference_db"]) for name, values in entry["instruments"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ModelError(f"{source}: {CONFIG_KEY} is not a velocity -> level fit (expected slope and "
                             f"instruments: {{name: {{intercept_db, reference_db}}}}; rerun `mididdsp calibrate`)") from None
        if not all(np.isfinite([slope, *intercepts.values(), *references.values()])):
            raise ModelError(f"{source}: {CONFIG_KEY} holds a value that is not a finite number")
        return cls(slope, intercepts, references)

    def track_offset_db(self, instrument: str, velocities, volume_db) -> float:
        """A track's ``level_offset_db`` (dB): ``velocities`` [notes] (MIDI) and ``volume_db`` [notes] (the prior's
        relative levels, dB) of all its notes -> the offset that puts the median note level at the fit's level for
        these velocities (module docstring). 0 for an instrument the fit does not know."""
        if instrument not in self.intercepts_db:
            return 0.0
        fitted = self.intercepts_db[instrument] + self.slope * velocity_level_db(velocities)
        return float(fitted - (_median(volume_db) - self.references_db[instrument]))

    def instrument_change_db(self, old: str, new: str) -> float:
        """dB to add to a track's ``level_offset_db`` when its instrument changes from ``old`` to ``new``: the fit's
        level for the same velocities moves by the instruments' difference in ``intercept + reference`` (the slope
        is shared). 0 where the fit does not know either instrument."""
        if old not in self.intercepts_db or new not in self.intercepts_db:
            return 0.0
        return float(self.intercepts_db[new] + self.references_db[new]
                     - self.intercepts_db[old] - self.references_db[old])


# ------------------------------------------------------------------------------------------------ the command
def teacher_recordings(model_dir: str | Path, data_dir: str | Path, split: str = "train") -> list[Recording]:
    """The recordings of ``split`` in the teacher cache a prior was trained on (its config's ``teacher.key``
    under ``data_dir/teacher/``), as :class:`Recording`. Notes the coder did not read (``present`` false) are left
    out of both statistics, as they are of the offset."""
    from mididdsp.datasets.teacher import TEACHER_DIR, note_tables
    from mididdsp.models import read_model_config

    config = read_model_config(model_dir)
    key = (config.get("teacher") or {}).get("key")
    if not key:
        raise MididdspError(f"{model_dir}: the prior's config names no teacher cache (teacher.key); expected a "
                            f"prior exported by `mididdsp export` from an expression_prior run")
    folder = Path(data_dir) / TEACHER_DIR / str(key)
    if not folder.is_dir():
        raise MididdspError(f"{folder}: no teacher cache (the prior was trained on teacher {key}; build it with "
                            f"`mididdsp teacher {data_dir}` and the coder the prior was trained with)")
    known = config.get("instruments") or {}
    recordings = []
    for table in note_tables(data_dir, folder, split):
        present = np.asarray(table["present"], dtype=bool)
        if table["instrument"] not in known or not present.any():
            continue
        recordings.append(Recording(table["instrument"], velocity_level_db(table["notes"][present, 3]),
                                    float(np.median(table["level_offset_db"][present])),
                                    float(np.median(table["physical"][present, 0]))))
    if not recordings:
        raise MididdspError(f"{folder}: no {split} recordings of the prior's instruments "
                            f"({', '.join(sorted(known)) or 'none'})")
    return recordings


def calibrate_velocity_levels(model_dir: str | Path, data_dir: str | Path, split: str = "train") -> dict:
    """Fit ``model_dir``'s (a prior's) velocity -> level mapping on ``split`` of ``data_dir``'s teacher cache and
    store it in its config.yaml (:data:`CONFIG_KEY`, with the data it came from), atomically. Returns the entry."""
    from mididdsp.models import update_model_config

    entry = fit_velocity_levels(teacher_recordings(model_dir, data_dir, split))
    entry["data"], entry["split"] = str(data_dir), split
    update_model_config(model_dir, {CONFIG_KEY: entry})
    return entry


def print_fit(entry: dict, config_path: Path, out=None) -> None:
    """The fit as a table, one instrument a line (the command's report), on ``out`` (default: standard output)."""
    out = sys.stdout if out is None else out
    loo = entry["leave_one_out_db"]
    print(f"level_offset_db = intercept + {entry['slope']:.3f} x velocity_level_db  ({entry['statistic']}); "
          f"residual {entry['residual_db']:.2f} dB; leave one out: shared slope {loo['shared_slope']:.2f}, "
          f"slope per instrument {loo['slope_per_instrument']:.2f}, no velocity {loo['no_velocity']:.2f} dB", file=out)
    for name, values in entry["instruments"].items():
        alone = "-" if values["slope_alone"] is None else f"{values['slope_alone']:.2f}"
        r = "-" if values["r"] is None else f"{values['r']:.2f}"
        print(f"  {name:<12} intercept {values['intercept_db']:7.2f} dB  reference {values['reference_db']:7.2f} dB  "
              f"recordings {values['recordings']:3d}  own slope {alone:>5}  r {r:>5}", file=out)
    print(f"wrote {CONFIG_KEY} to {config_path}", file=out)


def run_prior(args: argparse.Namespace) -> int:
    """``mididdsp calibrate PRIOR_DIR --data PREPARED``: :func:`calibrate_velocity_levels` and its report."""
    from mididdsp.models import CONFIG_FILE

    entry = calibrate_velocity_levels(args.model, args.data, args.split)
    print_fit(entry, Path(args.model) / CONFIG_FILE)
    return 0


def _median(values) -> float:
    """``np.median`` of a 1-D sequence, the same value, without its import of numpy.ma (6 ms of a render's start)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    middle = len(ordered) // 2
    return float(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0)
