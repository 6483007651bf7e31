"""Training (mididdsp.training): configs, loss goes down, exact resume after kill -9, atomic checkpoints,
export/load round trip, the non-finite guard, and 2-process DDP on CPU. Tiny model and data built here."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mididdsp.dsp.core import n_frames
from mididdsp.errors import MididdspError
from mididdsp.fileio import remove_temp_files
from mididdsp.training.train import CONFIG_DIR, export, load_config, train

PYTHON_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
TONES_HZ = {"a": 220.0, "b": 261.6, "c": 329.6, "d": 392.0, "e": 440.0}

TINY_CONFIG = """
model: {{encoder: none, hidden_size: 32, mlp_layers: 0, instrument_embedding: 4, n_harmonics: 20,
        n_noise_bands: 17, reverb: learned, reverb_seconds: 0.1}}
data: {{dir: {data}, crop_seconds: 0.5, batch_size: 4, num_workers: 0}}
train: {{max_steps: {steps}, lr: 0.003, val_every_n_steps: 20, val_batches: 1, log_every: 5, checkpoint_every: 4,
        examples: 1, seed: 3, threads: 1, progress_bar: false}}
"""


def harmonic_tone(f0_hz: float, seconds: float = 2.0, sample_rate: int = 16000) -> np.ndarray:
    """Five harmonics with 1/k amplitudes and 50 ms fades."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    fade = np.minimum(1.0, t * 20) * np.minimum(1.0, (seconds - t) * 20)
    return (sum(0.3 / k * np.sin(2 * np.pi * k * f0_hz * t) for k in range(1, 6)) * fade).astype(np.float32)


def exact_f0(audio, **kwargs):
    """Stands in for CREPE: the tones are pure, so the FFT peak is their f0 (to 0.5 Hz)."""
    audio = np.asarray(audio)
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio)
    frames = n_frames(len(audio))
    return torch.full((frames,), float(peak_hz)), torch.ones(frames)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """5 recordings of 2 s, one instrument; 4 train, 1 valid."""
    from mididdsp.audio import save_audio
    from mididdsp.datasets import prepare as prep

    root = tmp_path_factory.mktemp("training_data")
    for name, f0_hz in TONES_HZ.items():
        save_audio(root / "audio" / "violin" / f"{name}.wav", harmonic_tone(f0_hz))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mididdsp.pitch.compute_f0", exact_f0)
        report = prep.prepare([f"audio:{root / 'audio'}"], root / "prepared", valid=0.2, test=0.0, workers=1,
                              progress=False)
    assert sorted(r["split"] for r in report.manifest["recordings"]) == ["train"] * 4 + ["valid"]
    return root / "prepared"


def write_config(path: Path, data: Path, steps: int) -> Path:
    path.write_text(TINY_CONFIG.format(data=data, steps=steps))
    return path


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory) -> dict:
    """An uninterrupted 40-step run (validation at 20 and 40, examples, export)."""
    root = tmp_path_factory.mktemp("full_run")
    config_file = write_config(root / "tiny.yaml", data_dir, 40)
    result = train(load_config(config_file), root / "run")
    return {"config": config_file, "result": result, "run_dir": root / "run"}


# --- configs -----------------------------------------------------------------------------------------------------

def test_packaged_configs_resolve_with_overrides() -> None:
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"autoencoder_tiny", "autoencoder", "synthesis_coder", "synthesis_generator", "expression_prior"} <= set(names)
    for name in names:
        config = load_config(name)
        assert set(config) == {"name", "task", "model", "data", "train"}
    assert load_config("synthesis_generator")["task"] == "synthesis_generator"
    assert load_config("autoencoder_tiny")["task"] == "autoencoder"
    tiny = load_config("autoencoder_tiny", ["train.max_steps=7", "data.batch_size=3", "train.lr=2e-4"])
    assert (tiny["train"]["max_steps"], tiny["data"]["batch_size"], tiny["train"]["lr"]) == (7, 3, 2e-4)
    assert tiny["model"]["encoder"] == "none" and tiny["model"]["hidden_size"] == 256
    assert load_config("synthesis_coder")["model"]["bidirectional"] is True
    with pytest.raises(MididdspError, match="train.max_stepz"):
        load_config("autoencoder_tiny", ["train.max_stepz=7"])
    with pytest.raises(MididdspError, match="model"):
        load_config("autoencoder_tiny", ["model.encoder=wavenet"])
    with pytest.raises(MididdspError, match="no_such_config"):
        load_config("no_such_config")


def test_every_packaged_config_trains_on_the_accelerator_when_there_is_one() -> None:
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        assert load_config(path.stem)["train"]["accelerator"] == "auto", path.name


def test_step_values_are_logged_every_log_every_steps_only() -> None:
    from types import SimpleNamespace

    from mididdsp.training.module import logging_step

    def module(step: int, stop: bool = False) -> SimpleNamespace:
        return SimpleNamespace(global_step=step, trainer=SimpleNamespace(log_every_n_steps=20, should_stop=stop))

    # Lightning writes step metrics when (steps done + 1) % log_every_n_steps == 0: the same steps
    assert [step for step in range(60) if logging_step(module(step))] == [19, 39, 59]
    assert logging_step(module(3, stop=True))


def test_resuming_with_other_model_settings_is_refused(data_dir, tmp_path) -> None:
    from mididdsp.training.train import save_config

    config = load_config(write_config(tmp_path / "tiny.yaml", data_dir, 10))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    save_config({**config, "model": {**config["model"], "hidden_size": 64, "n_instruments": 1}},
                tmp_path / "run" / "config.yaml")
    with pytest.raises(MididdspError, match=r"model.hidden_size: 64 -> 32"):
        train(config, tmp_path / "run")
    # init_from only seeds a fresh run, so a resumed run may name another copy of the same weights.
    from mididdsp.training.train import _check_resume

    saved = tmp_path / "run" / "config.yaml"
    save_config({**config, "train": {**config["train"], "init_from": "elsewhere/model"}}, saved)
    _check_resume(saved, config)


def test_step_sampler_streams_are_disjoint_across_ranks_and_restart_at_any_step() -> None:
    from itertools import islice

    from mididdsp.training.data import StepSampler

    ranks = [list(islice(iter(StepSampler(3, 0, rank, 2)), 30)) for rank in range(2)]
    assert sorted(ranks[0] + ranks[1]) == list(range(60))  # 10 steps x 2 ranks x 3 samples, each once
    assert list(islice(iter(StepSampler(3, 4, 1, 2)), 18)) == ranks[1][12:]  # resumed at step 4


def test_training_batches_depend_on_the_step_only_not_on_workers(data_dir) -> None:
    from types import SimpleNamespace

    from mididdsp.training.data import StepDataModule

    def batches(workers: int, start: int, count: int) -> list[torch.Tensor]:
        data = StepDataModule(data_dir, batch_size=3, num_workers=workers, crop_seconds=0.5, seed=1)
        data.trainer = SimpleNamespace(global_step=start, global_rank=0, world_size=1)
        loader = iter(data.train_dataloader())
        return [next(loader)["audio"] for _ in range(count)]

    plain = batches(0, 0, 4)
    assert not torch.equal(plain[0], plain[1])
    for got, want in zip(batches(2, 2, 2), plain[2:]):  # two worker processes, resumed at step 2
        assert torch.equal(got, want)


# --- learning ----------------------------------------------------------------------------------------------------

def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(data_dir) -> None:
    from mididdsp.training.data import StepDataModule
    from mididdsp.training.module import AutoencoderModule, seeded

    torch.manual_seed(0)
    data = StepDataModule(data_dir, batch_size=4, num_workers=0, crop_seconds=0.5)
    batch = next(iter(data.train_dataloader()))
    config = load_config(write_config(data_dir.parent / "fixed.yaml", data_dir, 10))
    module = AutoencoderModule(config["model"], config["train"])
    optimizer = module.configure_optimizers()["optimizer"]

    def loss() -> torch.Tensor:
        with seeded(0, torch.device("cpu")):
            return module.compute_loss(module(batch), batch)

    with torch.no_grad():
        before = float(loss())
    for _ in range(15):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.9 * before, (before, after)


def test_run_writes_checkpoints_logs_examples_and_model(full_run) -> None:
    run_dir, result = full_run["run_dir"], full_run["result"]
    assert result.global_step == 40 and checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 40
    assert result.best_checkpoint is not None and np.isfinite(result.best_val_loss)
    assert load_config(run_dir / "config.yaml")["model"]["n_instruments"] == 1
    metrics = (run_dir / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "train_loss" in metrics[0] and "val_loss" in metrics[0] and len(metrics) > 5
    for step in ("0000020", "0000040"):
        folder = run_dir / "examples" / f"step_{step}"
        assert {p.name for p in folder.iterdir()} == {"example_0.png", "example_0_input.wav",
                                                      "example_0_resynth.wav"}
        assert (folder / "example_0.png").read_bytes()[:4] == b"\x89PNG"
    from mididdsp.audio import load_audio

    example = load_audio(run_dir / "examples" / "step_0000040" / "example_0_input.wav")
    assert example.shape == (8000,)
    assert np.argmax(np.abs(np.fft.rfft(example))) * 2 == pytest.approx(440.0, abs=2)  # the valid tone (2 Hz bins)


# --- resume and checkpoints ------------------------------------------------------------------------------------------

def test_kill_9_then_rerun_resumes_to_the_uninterrupted_weights(full_run, tmp_path) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, "-m", "mididdsp", "train", str(full_run["config"]), "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, env=PYTHON_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    killed_at = checkpoint(last)["global_step"]
    assert 4 <= killed_at < 40

    result = train(load_config(full_run["config"]), run_dir)  # "rerunning the same command"
    assert result.resumed_from_step == killed_at and result.global_step == 40
    resumed, reference = checkpoint(last), checkpoint(full_run["run_dir"] / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] == 40
    for name, value in reference["state_dict"].items():  # exact: same batches, same noise, same optimizer state
        assert torch.equal(resumed["state_dict"][name], value), name
    moments = zip(resumed["optimizer_states"][0]["state"].values(), reference["optimizer_states"][0]["state"].values())
    for got, want in moments:
        assert int(got["step"]) == int(want["step"]) == 40
        assert torch.equal(got["exp_avg"], want["exp_avg"]) and torch.equal(got["exp_avg_sq"], want["exp_avg_sq"])
    assert resumed["lr_schedulers"][0]["last_epoch"] == 40


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path, monkeypatch) -> None:
    from mididdsp.training import callbacks

    io = callbacks.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(1000)}, path)

    def dies_halfway(obj, file):
        file.write(b"\x80\x02partial checkpoint bytes")
        raise KeyboardInterrupt  # as if the process were stopped while writing

    monkeypatch.setattr(callbacks.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(1000)}, path)
    assert checkpoint(path)["global_step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    (tmp_path / ".last.ckpt.tmp-abc").write_bytes(b"left by kill -9")
    assert [p.name for p in remove_temp_files(tmp_path)] == [".last.ckpt.tmp-abc"]


# --- export ------------------------------------------------------------------------------------------------------

def test_export_then_load_model_gives_identical_outputs(full_run, data_dir, tmp_path) -> None:
    from mididdsp.cli import main
    from mididdsp.models import load_model
    from mididdsp.training.data import StepDataModule
    from mididdsp.training.module import AutoencoderModule, seeded

    run_dir = full_run["run_dir"]
    assert main(["export", str(run_dir), "-o", str(tmp_path / "model"), "--checkpoint", "last"]) == 0
    model = load_model(tmp_path / "model")
    meta = model.metadata
    assert meta["instruments"] == {"violin": 0} and meta["training"]["global_step"] == 40
    assert meta["statistics"]["violin"]["pitch_midi"]["percentiles"]["50"] == pytest.approx(63.95, abs=0.2)
    assert meta["training"]["config"]["train"]["max_steps"] == 40

    state = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    config = load_config(run_dir / "config.yaml")
    module = AutoencoderModule(config["model"], config["train"])
    module.load_state_dict(state["state_dict"])
    module.eval()
    batch = next(iter(StepDataModule(data_dir, 2, 0, 0.5).val_dataloader()))
    with torch.no_grad(), seeded(5, torch.device("cpu")):
        want = module(batch)["audio"]
    with torch.no_grad(), seeded(5, torch.device("cpu")):
        got = model(batch["f0_hz"], batch["loudness_db"], audio=batch["audio"], instrument=batch["instrument"])["audio"]
    assert torch.equal(got, want)
    # The run's own export (made at the end of training) holds the best checkpoint's step.
    best_step = checkpoint(run_dir / "checkpoints" / "best.ckpt")["global_step"]
    assert load_model(run_dir / "model").metadata["training"]["global_step"] == best_step
    with pytest.raises(MididdspError, match="no such checkpoint"):
        export(run_dir, tmp_path / "other", str(tmp_path / "missing.ckpt"))


def test_init_from_copies_a_trained_model_and_matches_instruments_by_name(full_run, data_dir, tmp_path) -> None:
    from mididdsp.models import load_model
    from mididdsp.synthesis.autoencoder import DDSPAutoencoder
    from mididdsp.training.train import initialise_from

    source_dir = full_run["run_dir"] / "model"
    source = load_model(source_dir)  # instruments {"violin": 0}
    settings = {**source.config.to_dict(), "n_instruments": 2}
    torch.manual_seed(0)
    target = DDSPAutoencoder(settings)
    fresh_embedding = target.instrument_embedding.weight[0].detach().clone()
    assert initialise_from(target, source_dir, {"cello": 0, "violin": 1}) == ["cello"]
    assert torch.equal(target.instrument_embedding.weight[1], source.instrument_embedding.weight[0])
    assert torch.equal(target.synth.reverb.impulse_response[1], source.synth.reverb.impulse_response[0])
    assert torch.equal(target.instrument_embedding.weight[0], fresh_embedding)  # unknown to the source: kept
    assert torch.equal(target.gru.weight_hh_l0, source.gru.weight_hh_l0)
    with pytest.raises(MididdspError, match="does not fit this config's model"):
        initialise_from(DDSPAutoencoder({**settings, "hidden_size": 16}), source_dir, {"violin": 0})

    # Through `train`: with a zero learning rate the run ends on the source's weights exactly.
    config = load_config(write_config(tmp_path / "tiny.yaml", data_dir, 2),
                         [f"train.init_from={source_dir}", "train.lr=0.0", "train.val_every_n_steps=2"])
    result = train(config, tmp_path / "run")
    trained = load_model(result.model_dir).state_dict()
    assert all(torch.equal(trained[name], value) for name, value in source.state_dict().items())


# --- failure guard -----------------------------------------------------------------------------------------------

def test_non_finite_loss_stops_training_with_one_clear_error(data_dir, tmp_path, monkeypatch) -> None:
    from mididdsp.training.module import AutoencoderModule

    original = AutoencoderModule.compute_loss

    def nan_at_step_6(self, outputs, batch):
        loss = original(self, outputs, batch)
        return loss * float("nan") if self.training and self.global_step == 5 else loss

    monkeypatch.setattr(AutoencoderModule, "compute_loss", nan_at_step_6)
    config = load_config(write_config(tmp_path / "tiny.yaml", data_dir, 20))
    with pytest.raises(MididdspError, match=r"training stopped at step 6: the loss is nan") as error:
        train(config, tmp_path / "run")
    assert "\n" not in str(error.value)
    last = checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4  # the last periodic checkpoint, before the bad step
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())


# --- multi-process -----------------------------------------------------------------------------------------------

def test_ddp_with_two_cpu_processes(data_dir, tmp_path) -> None:
    config_file = write_config(tmp_path / "tiny.yaml", data_dir, 4)
    command = [sys.executable, "-m", "mididdsp", "train", str(config_file), "--run-dir", str(tmp_path / "run"),
               "train.strategy=ddp", "train.devices=2", "train.accelerator=cpu", "train.val_every_n_steps=4"]
    completed = subprocess.run(command, env=PYTHON_ENV, capture_output=True, text=True, timeout=120)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output
    last = checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4
    from mididdsp.models import load_model

    assert load_model(tmp_path / "run" / "model").metadata["training"]["global_step"] == 4


# --- precision ---------------------------------------------------------------------------------------------------

def test_bf16_mixed_precision_trains_on_cpu_with_the_network_in_bfloat16(data_dir, tmp_path, monkeypatch) -> None:
    """train.precision=bf16-mixed (the GPU option) also runs on CPU here: Lightning's CPU autocast runs the
    network in bfloat16 while the DSP and the loss stay float32; a few steps give a finite loss."""
    from mididdsp.synthesis.autoencoder import DDSPAutoencoder

    dtypes: set[torch.dtype] = set()
    original = DDSPAutoencoder.network_outputs

    def recording(self, *args, **kwargs):
        outputs = original(self, *args, **kwargs)
        dtypes.add(outputs["amplitude"].dtype)
        return outputs

    monkeypatch.setattr(DDSPAutoencoder, "network_outputs", recording)
    config = load_config(write_config(tmp_path / "tiny.yaml", data_dir, 6),
                         ["train.precision=bf16-mixed", "train.export=false", "train.val_every_n_steps=6"])
    result = train(config, tmp_path / "run")
    assert result.global_step == 6 and np.isfinite(result.best_val_loss)
    assert torch.bfloat16 in dtypes  # the network really ran in reduced precision
    metrics = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    column = metrics[0].split(",").index("train_loss")
    losses = [float(row.split(",")[column]) for row in metrics[1:] if row.split(",")[column]]
    assert losses and all(np.isfinite(losses))
    last = checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(value.dtype == torch.float32 and torch.isfinite(value).all() for value in last["state_dict"].values())
    bad = load_config(write_config(tmp_path / "bad.yaml", data_dir, 2), ["train.precision=12-fancy"])
    with pytest.raises(MididdspError, match="12-fancy") as error:
        train(bad, tmp_path / "bad_run")
    assert "\n" not in str(error.value) and not (tmp_path / "bad_run" / "checkpoints").exists()
