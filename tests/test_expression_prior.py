"""The expression prior (mididdsp.expression.prior), its training task and its evaluation.

A tiny prior is trained here (a few hundred steps, seconds) on synthetic voices whose expression is known:
volume = velocity / 127 plus noise, brightness = volume plus less noise (a correlation inside a note), the other
controls uniform. The oracles: a crescendo in velocity comes out as a rising volume, fixing the volume moves the
brightness with it, sampling is reproducible and local, and training lowers the held-out loss. The task is run
end to end through ``train()`` on a hand-made prepared folder and teacher cache (no audio needed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mididdsp.errors import MididdspError
from mididdsp.expression.prior import PRIOR_OUTPUTS, ExpressionPrior, PriorConfig, note_features

TINY = {"n_instruments": 2, "instrument_embedding": 4, "hidden_size": 16, "ar_size": 16, "head_size": 24,
        "n_bins": 32, "dropout": 0.0, "ar_dropout": 0.5}
TRAIN_SEED = 0
VOLUME, BRIGHTNESS, RATE = PRIOR_OUTPUTS.index("volume"), PRIOR_OUTPUTS.index("brightness"), 6


def synthetic_voices(count: int, notes: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` voices of ``notes`` notes: random durations, gaps and pitches, a velocity per phrase of 4 notes
    (with a small deviation); targets: volume = velocity / 127 + N(0, 0.08), brightness = volume + N(0, 0.015),
    the rest U(0, 1), rate U(4, 7) Hz with vibrato > 0.1 (else 0)."""
    rng = np.random.default_rng(seed)
    duration = rng.uniform(0.1, 0.8, (count, notes))
    gap = rng.choice([0.0, 0.05, 0.5], (count, notes), p=[0.6, 0.3, 0.1])
    start = np.cumsum(gap + np.concatenate([np.zeros((count, 1)), duration[:, :-1]], 1), axis=1)
    phrase_velocity = rng.uniform(25, 125, (count, (notes + 3) // 4)).repeat(4, axis=1)[:, :notes]
    velocity = np.clip(phrase_velocity + rng.normal(0, 3, (count, notes)), 1, 127).round()
    table = np.stack([start, start + duration, rng.integers(55, 80, (count, notes)), velocity], -1)
    targets = rng.uniform(0, 1, (count, notes, 7))
    targets[..., VOLUME] = np.clip(velocity / 127 + rng.normal(0, 0.08, (count, notes)), 0, 1)
    targets[..., BRIGHTNESS] = np.clip(targets[..., VOLUME] + rng.normal(0, 0.015, (count, notes)), 0, 1)
    targets[..., RATE] = np.where(targets[..., 3] > 0.1, rng.uniform(4, 7, (count, notes)), 0.0)
    return {"notes": torch.tensor(table, dtype=torch.float32), "note_mask": torch.ones(count, notes, dtype=torch.bool),
            "instrument": torch.tensor(rng.integers(0, 2, count)),
            "targets": torch.tensor(targets, dtype=torch.float32)}


def mean_loss(model: ExpressionPrior, data: dict) -> float:
    with torch.no_grad():
        return float(-model.log_prob(data["notes"], data["note_mask"], data["instrument"], data["targets"]).mean())


@pytest.fixture(scope="module")
def trained() -> dict:
    """A tiny prior trained for 400 steps (about 10 s on one core) and its losses before / after."""
    train, held_out = synthetic_voices(64, 24, seed=1), synthetic_voices(16, 24, seed=2)
    with torch.random.fork_rng(devices=[]):  # initial weights and the AR dropout, without touching the caller's RNG
        torch.manual_seed(TRAIN_SEED)
        model = ExpressionPrior(TINY).eval()
        before = mean_loss(model, held_out)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        rng = np.random.default_rng(TRAIN_SEED)
        for _ in range(400):
            rows = torch.from_numpy(rng.choice(64, 16, replace=False))
            loss = -model.log_prob_terms(train["notes"][rows], train["note_mask"][rows], train["instrument"][rows],
                                         train["targets"][rows], smoothing=1.0).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return {"model": model, "before": before, "after": mean_loss(model, held_out), "held_out": held_out}


def crescendo(notes: int = 16, low: float = 30.0, high: float = 120.0) -> dict[str, torch.Tensor]:
    """One legato voice of equal notes whose velocity rises linearly from ``low`` to ``high``."""
    start = torch.arange(notes, dtype=torch.float32) * 0.4
    table = torch.stack([start, start + 0.4, torch.full((notes,), 67.0), torch.linspace(low, high, notes)], -1)
    return {"notes": table[None], "note_mask": torch.ones(1, notes, dtype=torch.bool),
            "instrument": torch.tensor([0])}


def voice_args(data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return data["notes"], data["note_mask"], data["instrument"]


# --- the model ---------------------------------------------------------------------------------------------------

def test_config_rejects_unknown_and_bad_settings_and_round_trips() -> None:
    config = PriorConfig.from_dict(TINY)
    assert PriorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="hiden_size"):
        PriorConfig.from_dict({"hiden_size": 3})
    with pytest.raises(ValueError, match="point_estimate"):
        PriorConfig.from_dict({"point_estimate": "average"})
    with pytest.raises(ValueError, match="rate_low_hz"):
        PriorConfig.from_dict({"rate_low_hz": 9.0, "rate_high_hz": 4.0})
    assert sum(p.numel() for p in ExpressionPrior({"n_instruments": 4}).parameters()) <= 300_000


def test_save_and_load_round_trip(trained, tmp_path) -> None:
    from mididdsp.models import load_model, save_model

    save_model(trained["model"], tmp_path / "prior", extra={"instruments": {"a": 0, "b": 1}})
    loaded = load_model(tmp_path / "prior", expected=("ExpressionPrior",))
    assert isinstance(loaded, ExpressionPrior) and loaded.config == trained["model"].config
    args = voice_args(trained["held_out"])
    assert torch.equal(loaded.sample(*args, temperature=1.0, seed=4),
                       trained["model"].sample(*args, temperature=1.0, seed=4))


def test_features_see_gaps_phrases_and_velocity() -> None:
    notes = torch.tensor([[[0.0, 1.0, 60, 64], [1.0, 1.5, 62, 127], [2.0, 2.5, 67, 32], [2.4, 3.0, 65, 64]]])
    features = note_features(notes, torch.ones(1, 4, dtype=torch.bool))[0]
    assert features[:, 2].tolist() == pytest.approx([2.0, 0.0, 0.5, -0.1])      # gap from the previous note (s)
    assert features[:, 4].tolist() == pytest.approx([64 / 127, 1.0, 32 / 127, 64 / 127])
    assert features[:, 6].tolist() == pytest.approx([0.0, 1 / 16, 0.0, 1 / 16])   # notes since the phrase began
    assert features[:, 7].tolist() == pytest.approx([1 / 16, 0.0, 1 / 16, 0.0])   # notes until it ends
    assert features[:, 10].tolist() == pytest.approx([2 / 12, 5 / 12, -2 / 12, 0.0])  # interval to the next note


def test_log_prob_is_finite_and_training_lowers_it(trained) -> None:
    assert np.isfinite(trained["before"]) and np.isfinite(trained["after"])
    # Untrained: about uniform densities (log-density ~0). Trained: volume and brightness are sharp.
    assert trained["after"] < trained["before"] - 2.0, (trained["before"], trained["after"])
    data = trained["held_out"]
    terms = trained["model"].log_prob_terms(*voice_args(data), data["targets"])
    assert terms.shape == (16, 24, 7) and bool(torch.isfinite(terms).all())
    assert bool((terms[..., RATE][data["targets"][..., RATE] == 0] == 0).all())  # no rate term without vibrato


def test_higher_velocity_gives_higher_volume(trained) -> None:
    model = trained["model"]
    volume = model.sample(*voice_args(crescendo()), temperature=0.0)[0, :, VOLUME]
    assert volume[-1] - volume[0] > 0.4, volume
    assert np.corrcoef(np.linspace(30, 120, 16), volume.numpy())[0, 1] > 0.95
    # And in samples: the loud half of the crescendo is louder than the quiet half in every draw.
    for seed in range(3):
        sampled = model.sample(*voice_args(crescendo()), temperature=1.0, seed=seed)[0, :, VOLUME]
        assert sampled[8:].mean() > sampled[:8].mean() + 0.2


def test_temperature_zero_is_deterministic_and_seed_free(trained) -> None:
    args = voice_args(trained["held_out"])
    first = trained["model"].sample(*args, temperature=0.0, seed=1)
    assert torch.equal(first, trained["model"].sample(*args, temperature=0.0, seed=2))
    assert torch.equal(first, trained["model"].sample(*args, temperature=0.0, seed=None))


def test_same_seed_same_table_other_seed_other_table_global_rng_untouched(trained) -> None:
    model, args = trained["model"], voice_args(trained["held_out"])
    state = torch.get_rng_state()
    table = model.sample(*args, temperature=1.0, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(table, model.sample(*args, temperature=1.0, seed=7))
    other = model.sample(*args, temperature=1.0, seed=8)
    assert (table - other).abs()[..., :6].mean() > 0.05
    assert not torch.equal(model.sample(*args, seed=None), model.sample(*args, seed=None))
    # Values stay in range: controls in [0, 1], rates in the model's Hz range.
    assert float(table[..., :6].min()) >= 0 and float(table[..., :6].max()) <= 1
    assert float(table[..., RATE].min()) >= 3.0 and float(table[..., RATE].max()) <= 10.0
    # A low temperature concentrates the samples of the predictable controls near the temperature-0 table.
    point = model.sample(*args, temperature=0.0)
    cold = model.sample(*args, temperature=0.2, seed=7)
    sharp = [VOLUME, BRIGHTNESS]
    assert (cold - point)[..., sharp].abs().mean() < 0.6 * (table - point)[..., sharp].abs().mean()


def test_fixed_values_come_back_bit_exact_and_the_rest_follow(trained) -> None:
    model = trained["model"]
    voice = crescendo()
    fixed_values = torch.rand(1, 16, 7, generator=torch.Generator().manual_seed(0))
    fixed_values[..., RATE] = 5.4321
    fixed_mask = torch.zeros(1, 16, 7, dtype=torch.bool)
    fixed_mask[..., VOLUME] = True           # every note's volume
    fixed_mask[0, 3, :] = True               # and all of note 3
    fixed_mask[0, 5, RATE] = True
    # Volumes a zigzag of +-0.15 around what the velocity implies: brightness (= volume + small noise in the
    # data) must follow the zigzag, i.e. the fixed volume, not the velocity.
    zigzag = 0.15 * (torch.arange(16) % 2 * 2 - 1).float()
    fixed_values[0, :, VOLUME] = torch.linspace(30, 120, 16) / 127 + zigzag
    rows = [i for i in range(16) if i != 3]
    for temperature in (0.0, 1.0):
        table = model.sample(*voice_args(voice), temperature=temperature, seed=3, fixed_values=fixed_values,
                             fixed_mask=fixed_mask)
        assert torch.equal(table[fixed_mask], fixed_values[fixed_mask])
        brightness = table[0, rows, BRIGHTNESS]
        assert (brightness - fixed_values[0, rows, VOLUME]).abs().mean() < 0.05
        assert np.corrcoef(brightness - torch.linspace(30, 120, 16)[rows] / 127, zigzag[rows])[0, 1] > 0.9
        # Unconstrained, the same seed gives a table whose brightness tracks its own volume.
        free = model.sample(*voice_args(voice), temperature=temperature, seed=3)
        assert (free[0, :, BRIGHTNESS] - free[0, :, VOLUME]).abs().mean() < 0.05
        assert not torch.equal(free[0, rows, BRIGHTNESS], table[0, rows, BRIGHTNESS])


def test_padding_rows_are_zero_and_do_not_change_the_voice(trained) -> None:
    model = trained["model"]
    data = trained["held_out"]
    notes, mask, instrument = data["notes"][:2].clone(), data["note_mask"][:2].clone(), data["instrument"][:2]
    mask[1, 10:] = False
    notes[1, 10:] = 1e3  # garbage in the padding must not leak into the valid notes
    table = model.sample(notes, mask, instrument, temperature=0.0)
    assert bool((table[1, 10:] == 0).all())
    alone = model.sample(notes[1:, :10], mask[1:, :10], instrument[1:], temperature=0.0)
    assert torch.allclose(table[1, :10], alone[0], atol=1e-5)
    log_prob = model.log_prob(notes, mask, instrument, data["targets"][:2])
    assert bool((log_prob[1, 10:] == 0).all())
    assert torch.allclose(log_prob[1, :10], model.log_prob(notes[1:, :10], mask[1:, :10], instrument[1:],
                                                           data["targets"][1:2, :10])[0], atol=1e-4)
    holes = mask.clone()
    holes[0, 4] = False
    with pytest.raises(ValueError, match="valid notes must come first"):
        model.sample(notes, holes, instrument)


@pytest.mark.parametrize("point", ["mean", "median", "mode"])
def test_compiled_sampling_equals_the_torch_loop(trained, point, monkeypatch) -> None:
    """The compiled note loop (mididdsp.expression.prior_sampling) gives the torch loop's values to float rounding:
    sampled and point estimates, with and without fixed values, with padding rows; the same seed, the same draws."""
    from mididdsp.expression import prior_sampling

    if not prior_sampling.available():
        pytest.skip("numba is not installed")
    model = trained["model"]
    monkeypatch.setattr(model.config, "point_estimate", point)
    data = trained["held_out"]
    notes, mask, instrument = data["notes"][:4], data["note_mask"][:4].clone(), data["instrument"][:4]
    mask[1, 15:] = False
    generator = torch.Generator().manual_seed(5)
    fixed_mask = torch.rand(*mask.shape, 7, generator=generator) < 0.25
    fixed_values = data["targets"][:4]
    for temperature in (1.0, 0.0, 0.6):
        for fixed in ({}, {"fixed_values": fixed_values, "fixed_mask": fixed_mask}):
            compiled = model.sample(notes, mask, instrument, temperature=temperature, seed=2, compiled=True, **fixed)
            loop = model.sample(notes, mask, instrument, temperature=temperature, seed=2, **fixed)
            torch.testing.assert_close(compiled, loop, atol=1e-4, rtol=0)
            assert bool((compiled[1, 15:] == 0).all())
            if fixed:
                kept = fixed_mask & mask.unsqueeze(-1)
                assert torch.equal(compiled[kept], fixed_values[kept])


# --- the training task and the evaluation ------------------------------------------------------------------------

TASK_CONFIG = """
task: expression_prior
model: {{hidden_size: 8, ar_size: 8, head_size: 8, n_bins: 16, instrument_embedding: 2}}
data: {{dir: {data}, teacher: {coder}, segment_notes: 12, batch_size: 4, num_workers: 0}}
train: {{max_steps: {steps}, lr: 0.003, val_every_n_steps: 10, val_batches: 2, log_every: 5, checkpoint_every: 5,
        seed: 3, threads: 1, progress_bar: false, examples: 0}}
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """A prepared folder with only what the prior reads: a manifest (5 recordings of 2 instruments: 3 train,
    1 valid, 1 test) and a teacher cache written by hand for a stand-in coder directory."""
    from mididdsp.datasets.shards import shard_name
    from mididdsp.datasets.teacher import INFO_FILE, teacher_dir

    root = tmp_path_factory.mktemp("prior_data")
    coder = root / "coder"
    coder.mkdir()
    (coder / "config.yaml").write_text("model: {}\n")
    (coder / "weights.pt").write_bytes(b"stand-in")
    data = root / "prepared"
    folder = teacher_dir(data, coder)
    folder.mkdir(parents=True)
    ranges = {"volume": [-60.0, -30.0]}
    (folder / INFO_FILE).write_text(json.dumps({"model": str(coder), "instruments": {"flute": 0, "violin": 1},
                                                "expression_ranges": ranges}))
    recordings = []
    voices = synthetic_voices(5, 30, seed=5)
    for index, split in enumerate(("train", "train", "valid", "train", "test")):
        instrument = ("flute", "violin")[index % 2]
        recording_id = f"synthetic/{instrument}_{index}"
        recordings.append({"id": recording_id, "split": split, "instrument": instrument})
        targets = voices["targets"][index].numpy()
        physical = np.zeros((30, 7), np.float32)
        physical[:, 4] = targets[:, RATE]
        np.savez(folder / shard_name(recording_id), notes=voices["notes"][index].numpy().astype(np.float64),
                 controls=targets[:, :6], physical=physical, present=np.ones(30, bool),
                 level_offset_db=np.zeros(30, np.float32))
    (data / "manifest.json").write_text(json.dumps({"instruments": {"flute": 0, "violin": 1},
                                                    "recordings": recordings, "statistics": {}}))
    return {"data": data, "coder": coder, "ranges": ranges}


def task_config(prepared: dict, path: Path, steps: int) -> dict:
    from mididdsp.training.train import load_config

    path.write_text(TASK_CONFIG.format(data=prepared["data"], coder=prepared["coder"], steps=steps))
    return load_config(path)


def test_train_task_end_to_end_resumes_exactly_and_exports(prepared, tmp_path) -> None:
    from mididdsp.models import load_model
    from mididdsp.training.train import train

    whole = train(task_config(prepared, tmp_path / "whole.yaml", 20), tmp_path / "whole")
    assert whole.global_step == 20 and whole.best_val_loss is not None and np.isfinite(whole.best_val_loss)
    model = load_model(whole.model_dir, expected=("ExpressionPrior",))
    assert model.metadata["expression_ranges"] == prepared["ranges"]
    assert model.metadata["instruments"] == {"flute": 0, "violin": 1} and model.config.n_instruments == 2
    # Stopped at step 10 and continued to 20: the same weights as the uninterrupted run.
    train(task_config(prepared, tmp_path / "part.yaml", 10), tmp_path / "part")
    resumed = train(task_config(prepared, tmp_path / "part.yaml", 20), tmp_path / "part")
    assert resumed.resumed_from_step == 10
    want = torch.load(whole.last_checkpoint, weights_only=True)["state_dict"]
    got = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(want[name], got[name]) for name in want)


def test_missing_teacher_cache_is_built_and_a_broken_coder_is_named(prepared, tmp_path) -> None:
    from mididdsp.training.prior_module import build_data

    config = task_config(prepared, tmp_path / "c.yaml", 5)
    config["data"]["teacher"] = str(tmp_path / "other_coder")
    (tmp_path / "other_coder").mkdir()
    for name in ("config.yaml", "weights.pt"):
        (tmp_path / "other_coder" / name).write_text("another coder")
    with pytest.raises(MididdspError, match="other_coder"):  # the cache is built on demand: the coder must load
        build_data(config)


def test_evaluation_report(prepared, trained, tmp_path) -> None:
    from mididdsp.expression.prior_eval import evaluate_prior, format_prior_report
    from mididdsp.models import save_model

    save_model(trained["model"], tmp_path / "prior", extra={"instruments": {"flute": 0, "violin": 1}})
    result = evaluate_prior(tmp_path / "prior", prepared["data"], "valid", coder_dir=prepared["coder"], samples=2)
    assert json.loads(json.dumps(result)) == result
    assert (result["recordings"], result["notes"]) == (1, 30) and result["bound"] is None
    # The prior learned volume and brightness from velocity: it beats the per-instrument mean on them.
    for name in ("volume", "brightness"):
        assert result["rmse"][name]["model"] < result["rmse"][name]["instrument_mean"]
    assert result["nll"]["model"] < result["nll"]["gaussian"]
    assert result["velocity"]["temperature_0"] > 0.8
    report = format_prior_report(result)
    assert "RMSE" in report and "NLL" in report and "velocity" in report


def test_bound_counts_the_soundfont_as_a_draw_the_notes_cannot_show() -> None:
    from mididdsp.expression.prior_eval import draw_bound

    # Recordings played in turn by two SoundFonts; the first control is 0.3 or 0.7 by SoundFont alone, the rest
    # follow a note feature. Resampling the SoundFont spreads the first control by its standard deviation, 0.2.
    rng = np.random.default_rng(0)
    recordings = []
    for index in range(24):
        features = rng.normal(size=(50, 3))
        soundfont = index % 2
        controls = np.empty((50, 6))
        controls[:, 0] = 0.3 + 0.4 * soundfont
        controls[:, 1:] = 0.5 + 0.1 * np.tanh(features[:, :1])
        performer = rng.normal(size=(50, 14))  # draws that explain nothing here
        played_by = np.eye(2)[np.full(50, soundfont)]
        recordings.append({"split": "train" if index < 18 else "test", "instrument": 0, "features": features,
                           "controls": controls, "short": np.zeros(50, bool), "performer": performer,
                           "played_by": played_by})
    with_soundfont = [{**r, "draws": np.concatenate([r["performer"], r["played_by"]], 1)} for r in recordings]
    without = [{**r, "draws": r["performer"]} for r in recordings]
    bound = draw_bound(with_soundfont, "test")["rmse"]
    assert 0.17 < bound["volume"]["draw_rmse"] < 0.23 and bound["volume"]["oracle_rmse"] < 0.05
    assert bound["brightness"]["draw_rmse"] < 0.03  # a function of the notes: no draw spreads it
    # Without the SoundFont among the draws nothing explains that control: the oracle misses it on held-out notes.
    assert draw_bound(without, "test")["rmse"]["volume"]["oracle_rmse"] > 0.15
