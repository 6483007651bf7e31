"""The velocity -> level fit (mididdsp.expression.levels): it recovers a known slope from synthetic recordings, and
`mididdsp calibrate` on a prior fits it on the prior's teacher cache and stores it in the prior's config.yaml."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mididdsp.cli import main
from mididdsp.datasets.shards import shard_name
from mididdsp.expression.levels import (CONFIG_KEY, Recording, VelocityLevels, fit_velocity_levels,
                                        velocity_level_db)

SLOPE = 0.8
INTERCEPTS = {"cello": 6.0, "flute": 9.0, "oboe": 7.5}
REFERENCES = {"cello": -37.0, "flute": -41.0, "oboe": -39.0}


def synthetic_recordings(rng: np.random.Generator, per_instrument: int = 10, noise_db: float = 0.3
                         ) -> list[tuple[str, np.ndarray, float]]:
    """(instrument, velocities [notes], level offset dB) of recordings whose offset follows the velocities with
    :data:`SLOPE` and the instrument's intercept, plus Gaussian noise of ``noise_db``."""
    out = []
    for name, intercept in INTERCEPTS.items():
        for _ in range(per_instrument):
            velocities = np.clip(rng.normal(rng.uniform(45, 110), 8.0, size=40).round(), 1, 127)
            out.append((name, velocities, intercept + SLOPE * velocity_level_db(velocities) + rng.normal(0, noise_db)))
    return out


def test_velocity_level_is_the_mean_general_midi_gain():
    assert velocity_level_db([127, 127]) == 0.0
    assert velocity_level_db([40, 110]) == pytest.approx(20 * (np.log10(40 / 127) + np.log10(110 / 127)))


def test_the_fit_recovers_a_known_slope_and_intercepts():
    recordings = [Recording(name, velocity_level_db(v), offset, REFERENCES[name])
                  for name, v, offset in synthetic_recordings(np.random.default_rng(0))]
    fit = fit_velocity_levels(recordings)
    assert fit["slope"] == pytest.approx(SLOPE, abs=0.03)
    for name, intercept in INTERCEPTS.items():
        assert fit["instruments"][name]["intercept_db"] == pytest.approx(intercept, abs=0.5)
        assert fit["instruments"][name]["reference_db"] == REFERENCES[name]
        assert fit["instruments"][name]["r"] > 0.9
    assert fit["residual_db"] == pytest.approx(0.3, abs=0.1)
    loo = fit["leave_one_out_db"]
    assert loo["shared_slope"] < loo["no_velocity"]  # the velocity term explains the recordings' levels


def test_a_track_is_put_where_the_fit_puts_its_velocities():
    """The offset re-centres the prior's levels: the track's median note level (volume_db + offset) is the
    reference plus the fitted offset of its velocities, whatever the prior's own median."""
    levels = VelocityLevels(SLOPE, INTERCEPTS, REFERENCES)
    volume_db = np.array([-45.0, -40.0, -36.0, -30.0, -33.0])
    for velocity in (40, 110):
        offset = levels.track_offset_db("cello", [velocity] * 5, volume_db)
        fitted = INTERCEPTS["cello"] + SLOPE * 40 * np.log10(velocity / 127)
        assert np.median(volume_db + offset) == pytest.approx(REFERENCES["cello"] + fitted)
    assert levels.track_offset_db("tuba", [40] * 5, volume_db) == 0.0  # an instrument the fit lacks: offset 0


def test_an_instrument_change_moves_the_track_to_where_the_fit_puts_the_new_instrument():
    """The editor's shift on an instrument change: the old track's offset plus it is the offset the fit gives the
    same notes on the new instrument, whatever their velocities and levels; 0 for an instrument the fit lacks."""
    levels = VelocityLevels(SLOPE, INTERCEPTS, REFERENCES)
    names = sorted(INTERCEPTS)
    old, new = names[0], names[1]
    volume_db = np.array([-45.0, -40.0, -36.0, -30.0])
    for velocities in ([40] * 4, [60, 90, 110, 127]):
        before = levels.track_offset_db(old, velocities, volume_db)
        after = levels.track_offset_db(new, velocities, volume_db)
        assert before + levels.instrument_change_db(old, new) == pytest.approx(after)
    assert levels.instrument_change_db(old, "tuba") == 0.0


def test_a_config_entry_that_is_not_a_fit_is_one_clear_error():
    from mididdsp.errors import ModelError

    assert VelocityLevels.from_config(None) is None
    with pytest.raises(ModelError, match="velocity_levels is not a velocity -> level fit"):
        VelocityLevels.from_config({"slope": 1.0, "instruments": {"cello": {"intercept_db": 1.0}}})


def test_calibrate_on_a_prior_fits_its_teacher_cache_and_stores_the_fit(tmp_path, capsys):
    """A prepared folder's manifest and teacher cache, written here: train recordings whose offsets follow
    :data:`SLOPE`, a held-out recording that does not (left out of the fit), a note the coder did not read."""
    rng = np.random.default_rng(1)
    data, key = tmp_path / "prepared", "0123456789"
    (data / "teacher" / key).mkdir(parents=True)
    manifest = []
    recordings = synthetic_recordings(rng, per_instrument=6, noise_db=0.0)
    recordings.append(("cello", np.full(40, 30.0), 40.0))  # a valid recording far off the line
    for index, (name, velocities, offset) in enumerate(recordings):
        recording_id = f"corpus/{name}_{index:04d}"
        manifest.append({"id": recording_id, "split": "valid" if offset == 40.0 else "train", "instrument": name,
                         "has_notes": True})
        velocities = np.concatenate([[1.0], velocities])  # a first note the coder did not read
        count = len(velocities)
        notes = np.stack([np.arange(count) * 0.5, np.arange(count) * 0.5 + 0.4, np.full(count, 60.0), velocities], 1)
        present = np.arange(count) > 0
        physical = np.zeros((count, 7), np.float32)
        physical[:, 0] = REFERENCES[name] + rng.normal(0, 3.0, count)
        physical[:, 0] += REFERENCES[name] - np.median(physical[present, 0])  # relative: median at the reference
        np.savez(data / "teacher" / key / shard_name(recording_id), notes=notes, present=present,
                 controls=np.zeros((count, 6), np.float32), physical=physical,
                 level_offset_db=np.where(present, offset, 0.0).astype(np.float32))
    (data / "manifest.json").write_text(json.dumps({"recordings": manifest}))
    prior = tmp_path / "prior"
    prior.mkdir()
    (prior / "config.yaml").write_text(yaml.safe_dump({
        "format": 1, "model_type": "ExpressionPrior", "model": {"n_instruments": 3},
        "instruments": {name: i for i, name in enumerate(INTERCEPTS)}, "teacher": {"key": key}}))

    assert main(["calibrate", str(prior), "--data", str(data)]) == 0
    assert f"wrote {CONFIG_KEY}" in capsys.readouterr().out
    config = yaml.safe_load((prior / "config.yaml").read_text())
    fit = config[CONFIG_KEY]
    assert fit["slope"] == pytest.approx(SLOPE, abs=1e-3)  # exact: the unread note (velocity 1) is left out
    assert fit["split"] == "train" and sum(v["recordings"] for v in fit["instruments"].values()) == 18
    for name, intercept in INTERCEPTS.items():
        assert fit["instruments"][name]["intercept_db"] == pytest.approx(intercept, abs=0.02)
        assert fit["instruments"][name]["reference_db"] == pytest.approx(REFERENCES[name], abs=1e-3)
    assert config["model"] == {"n_instruments": 3}  # the architecture is untouched
    levels = VelocityLevels.from_config(fit)
    assert levels.slope == fit["slope"]


def test_calibrate_on_a_prior_without_its_teacher_cache_is_one_clear_error(tmp_path, capsys):
    prior = tmp_path / "prior"
    prior.mkdir()
    (prior / "config.yaml").write_text(yaml.safe_dump({"model_type": "ExpressionPrior", "model": {},
                                                       "teacher": {"key": "abcdef0123"}}))
    (tmp_path / "prepared").mkdir()
    assert main(["calibrate", str(prior), "--data", str(tmp_path / "prepared")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no teacher cache" in err[0] and "mididdsp teacher" in err[0]
