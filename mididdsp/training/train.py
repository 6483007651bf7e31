"""``mididdsp train`` and ``mididdsp export``.

    mididdsp train CONFIG.yaml [section.key=value ...] [--run-dir DIR]
    mididdsp export RUN_DIR -o MODEL_DIR [--checkpoint best|last|PATH]

CONFIG is a YAML file or the name of a packaged config (``autoencoder_tiny``, ``autoencoder``,
``synthesis_coder``, ``synthesis_generator``, ``expression_prior`` in mididdsp/configs). The config's ``task``
(default ``autoencoder``) picks what is trained; each task lives in its own module of this package
(:data:`TASKS`), which provides the LightningModule, the data, the model check and the export. Dotted overrides change any setting (``data.dir=prepared/violin``,
``train.max_steps=2000``). The run directory receives the resolved ``config.yaml``, ``checkpoints/last.ckpt``
(every ``train.checkpoint_every`` steps and at the end) and ``checkpoints/best.ckpt`` (lowest validation loss),
CSV logs (and TensorBoard logs when ``tensorboard`` is installed), validation examples (WAV + PNG) and, at the
end, the exported model directory ``model/``. Rerunning the same command continues from ``last.ckpt`` (the
weights, optimizer, learning-rate schedule, step and data order), so a killed run loses at most
``checkpoint_every`` steps and ends with the same weights as an uninterrupted one.

``model.n_instruments`` is taken from the data's manifest; the instrument mapping and the per-instrument
statistics are stored with the exported model (``instruments``, ``statistics``).

``train.init_from=MODEL_DIR`` starts a new run from a trained model of the same task and sizes (train a shipped
model on, or fine-tune it on your own recordings): every weight is copied, and the per-instrument rows
(:data:`INSTRUMENT_ROWS`) by instrument name, so instruments the model does not know start from their fresh
initialisation. A resumed run ignores it (the checkpoint holds the weights).

This module is cheap to import; torch and Lightning are imported when a command runs.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mididdsp.errors import MididdspError
from mididdsp.fileio import atomic_path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILE = "config.yaml"
DATASET_FILE = "dataset.json"   # the training data's instrument mapping and statistics, written at train time
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.ckpt", "best.ckpt"

# task -> the module that trains it. Each provides DATA_DEFAULTS and TRAIN_DEFAULTS (settings beyond DEFAULTS),
# check_model_config(dict), build(config) -> (LightningModule, datamodule) and export_model(config, weights, dataset)
# -> (nn.Module, extra config dict).
TASKS = {"autoencoder": "mididdsp.training.module",
         "synthesis_generator": "mididdsp.training.generator_module",
         "expression_prior": "mididdsp.training.prior_module"}

# Every setting of the data / train sections common to all tasks, with its default (the model section is checked by
# the task). An unknown key is an error, so a typo in an override cannot go unnoticed.
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"dir": "data/prepared", "crop_seconds": 4.0, "batch_size": 16, "num_workers": 2,
             "eval_hop_seconds": None},
    "train": {"max_steps": 10000, "lr": 1e-3, "lr_decay_rate": 0.98, "lr_decay_steps": 10000, "grad_clip": 3.0,
              "seed": 0, "precision": "32-true", "val_every_n_steps": 500, "val_batches": 8, "log_every": 20,
              "checkpoint_every": 100, "run_dir": "runs/default", "accelerator": "auto", "devices": "auto",
              "strategy": "auto", "examples": 2, "progress_bar": True, "export": True, "threads": None,
              "init_from": None},
}
# Parameters with one row per instrument (first dimension), matched by instrument name by ``train.init_from``.
INSTRUMENT_ROWS = ("instrument_embedding.weight", "embedding.weight", "release", "synth.reverb.impulse_response")
# Settings that may differ when a run is resumed (everything else must match the saved config); init_from
# only seeds a fresh run, so a resumed one may name another copy of the same weights.
RESUMABLE_CHANGES = {"train.max_steps", "train.val_every_n_steps", "train.val_batches", "train.log_every",
                     "train.checkpoint_every", "train.examples", "train.progress_bar", "train.export",
                     "train.threads", "train.devices", "train.strategy", "train.accelerator",
                     "train.run_dir", "train.init_from", "data.num_workers", "data.dir"}


# --- configs -----------------------------------------------------------------------------------------------------

def config_path(name: str | os.PathLike) -> Path:
    """A config file path, or the packaged config of that name (``autoencoder_tiny`` or ``autoencoder_tiny.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if packaged.is_file() and len(path.parts) == 1:
        return packaged
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise MididdspError(f"config {str(name)!r}: no such file and no packaged config of that name (packaged: {names})")


def task_module(task: str):
    """The training module of ``task`` (imports Lightning)."""
    import importlib

    if task not in TASKS:
        raise MididdspError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[task])


def task_defaults(task: str) -> dict[str, dict[str, Any]]:
    """DEFAULTS plus the task's own data / train settings."""
    module = task_module(task)
    defaults = copy.deepcopy(DEFAULTS)
    defaults["data"].update(copy.deepcopy(getattr(module, "DATA_DEFAULTS", {})))
    defaults["train"].update(copy.deepcopy(getattr(module, "TRAIN_DEFAULTS", {})))
    return defaults


def load_config(name: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Resolve a config: defaults <- the YAML file <- dotted ``overrides``; checked, as a plain dict."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = config_path(name)
    try:
        base = OmegaConf.load(path)
    except Exception as error:  # noqa: BLE001 - any YAML problem is the user's file
        raise MididdspError(f"{path}: not a readable YAML config ({str(error).splitlines()[0]})") from None
    for override in overrides:
        if "=" not in override or not override.split("=", 1)[0].strip():
            raise MididdspError(f"override {override!r}: expected section.key=value (e.g. train.max_steps=2000)")
    raw = OmegaConf.to_container(base) if base is not None else {}
    task = str(raw.get("task", "autoencoder")) if isinstance(raw, dict) else "autoencoder"
    if task not in TASKS:
        raise MididdspError(f"{path}: task {task!r}: expected one of {', '.join(TASKS)}")
    try:
        merged = OmegaConf.merge(OmegaConf.create({"task": task, **task_defaults(task)}), base,
                                 OmegaConf.from_dotlist(list(overrides)))
        config = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as error:
        raise MididdspError(f"{path}: invalid config or override ({str(error).splitlines()[0]})") from None
    config.setdefault("name", path.stem)
    return check_config(config, str(path))


def check_config(config: dict, source: str = "config") -> dict:
    """Reject unknown sections/keys and values of the wrong type; coerce ints given for floats."""
    config.setdefault("task", "autoencoder")
    unknown = sorted(set(config) - {"name", "task", "model", "data", "train"})
    if unknown:
        raise MididdspError(f"{source}: unknown section(s) {unknown}; expected task, model, data, train")
    module = task_module(str(config["task"]))
    for section, defaults in task_defaults(str(config["task"])).items():
        values = config.get(section) or {}
        for key, value in values.items():
            if key not in defaults:
                raise MididdspError(f"{source}: unknown setting {section}.{key}; known: {', '.join(sorted(defaults))}")
            default = defaults[key]
            if isinstance(default, bool) and not isinstance(value, bool):
                raise MididdspError(f"{source}: {section}.{key}={value!r}, expected true or false")
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                values[key] = float(value)
            elif isinstance(default, (int, float)) and not isinstance(default, bool) and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MididdspError(f"{source}: {section}.{key}={value!r}, expected a number")
    try:
        module.check_model_config(dict(config.get("model") or {}))
    except (TypeError, ValueError) as error:
        raise MididdspError(f"{source}: invalid model section: {error}") from None
    train = config["train"]
    for key in ("max_steps", "val_every_n_steps", "checkpoint_every", "log_every", "lr_decay_steps"):
        if int(train[key]) < 1:
            raise MididdspError(f"{source}: train.{key}={train[key]}, expected a positive integer")
    if int(config["data"]["batch_size"]) < 1 or float(config["data"]["crop_seconds"]) <= 0:
        raise MididdspError(f"{source}: data.batch_size and data.crop_seconds must be positive")
    return config


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        flat.update(_flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return flat


def save_config(config: dict, path: Path) -> None:
    """Write a config as YAML atomically."""
    from omegaconf import OmegaConf

    with atomic_path(path) as temp:
        OmegaConf.save(OmegaConf.create(config), temp)


def _check_resume(saved_path: Path, config: dict) -> None:
    from omegaconf import OmegaConf

    saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True))
    wanted = _flatten(config)
    changed = sorted(key for key in set(saved) | set(wanted)
                     if saved.get(key) != wanted.get(key) and key not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {wanted.get(key)!r}" for key in changed[:4])
        raise MididdspError(f"{saved_path.parent}: this run has a checkpoint made with other settings ({details}); "
                            "use another --run-dir, or delete the run directory to start over")


# --- training ----------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_val_loss: float | None
    model_dir: Path | None
    resumed_from_step: int | None = None
    seconds: float = 0.0


def train(config: dict, run_dir: str | os.PathLike | None = None) -> TrainResult:
    """Train (or resume) the run described by a resolved ``config`` (see :func:`load_config`)."""
    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
    from pytorch_lightning.loggers import CSVLogger

    from mididdsp.fileio import remove_temp_files
    from mididdsp.training.callbacks import AtomicCheckpointIO, ExampleWriter, FinalCheckpoint, NonFiniteGuard
    from mididdsp.datasets.shards import write_json_atomic

    _quiet_lightning()
    started = time.perf_counter()
    config = copy.deepcopy(config)
    run_dir = Path(run_dir or config["train"]["run_dir"]).resolve()
    config["train"]["run_dir"] = str(run_dir)
    data_cfg, train_cfg = config["data"], config["train"]
    data_cfg["dir"] = str(Path(data_cfg["dir"]).resolve())
    if train_cfg.get("threads"):
        torch.set_num_threads(int(train_cfg["threads"]))

    config.setdefault("task", "autoencoder")
    task = task_module(config["task"])
    config.setdefault("model", {})
    data = task.build_data(config)  # may complete config["model"] from the data (instrument count, ...)

    checkpoint_dir = run_dir / CHECKPOINT_DIR
    last = checkpoint_dir / LAST
    resume = last.is_file()
    if resume and (run_dir / CONFIG_FILE).is_file():
        _check_resume(run_dir / CONFIG_FILE, config)

    pl.seed_everything(int(train_cfg["seed"]), workers=True, verbose=False)
    module = task.build_module(config)
    if train_cfg.get("init_from") and not resume:
        fresh = initialise_from(module.model, train_cfg["init_from"], data.instruments)
        print(f"starting from {train_cfg['init_from']}" + (f" (new instruments: {', '.join(fresh)})" if fresh else ""),
              flush=True)
    validate = data.has_validation()
    loggers: list = [CSVLogger(run_dir, name="logs")]
    try:
        import tensorboard  # noqa: F401 - only to know whether TensorBoard logging is possible
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard"))
    except ImportError:
        pass
    callbacks: list = [
        ModelCheckpoint(dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1,
                        every_n_train_steps=int(train_cfg["checkpoint_every"]), enable_version_counter=False),
        NonFiniteGuard(check_gradients=str(train_cfg["precision"]) not in ("16-mixed", "16")),
        ExampleWriter(run_dir),
        FinalCheckpoint(last),
    ]
    if validate:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val_loss", mode="min",
                                         save_top_k=1, enable_version_counter=False,
                                         auto_insert_metric_name=False))
    if train_cfg["progress_bar"]:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, int(train_cfg["log_every"]) // 4)))
    try:
        trainer = pl.Trainer(
            max_steps=int(train_cfg["max_steps"]), accelerator=train_cfg["accelerator"],
            devices=train_cfg["devices"], strategy=train_cfg["strategy"], precision=train_cfg["precision"],
            gradient_clip_val=float(train_cfg["grad_clip"]) or None, gradient_clip_algorithm="norm",
            val_check_interval=int(train_cfg["val_every_n_steps"]), check_val_every_n_epoch=None,
            limit_val_batches=int(train_cfg["val_batches"]) if validate else 0, num_sanity_val_steps=0,
            log_every_n_steps=int(train_cfg["log_every"]), logger=loggers, callbacks=callbacks,
            plugins=[AtomicCheckpointIO()], enable_progress_bar=bool(train_cfg["progress_bar"]),
            enable_model_summary=False, use_distributed_sampler=False, default_root_dir=run_dir)
    except (ValueError, TypeError) as error:  # Lightning's MisconfigurationException is a ValueError
        raise MididdspError(f"train settings (accelerator/devices/strategy/precision): {error}") from None
    checkpoint_dir.mkdir(parents=True, exist_ok=True)  # only once the settings are known to be valid
    remove_temp_files(checkpoint_dir)
    save_config(config, run_dir / CONFIG_FILE)
    # What the model must carry (instrument ids, statistics) is kept with the run, so that exporting later does
    # not depend on the data folder still being there or unchanged.
    write_json_atomic(run_dir / DATASET_FILE, {"dir": data_cfg["dir"], "instruments": data.instruments,
                                               "statistics": data.statistics,
                                               "extra": getattr(data, "export_extra", {})})
    resumed_from = None
    if resume:
        try:
            resumed_from = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is the same problem
            raise MididdspError(f"{last}: unreadable checkpoint ({str(error).splitlines()[0][:120]}); move it away "
                                "to restart the run (best.ckpt, if present, holds the best weights)") from None
        print(f"resuming {run_dir} from step {resumed_from} ({last})", flush=True)
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)

    best = checkpoint_dir / BEST
    best_score = _best_score(callbacks)
    result = TrainResult(run_dir, trainer.global_step, last if last.is_file() else None,
                         best if best.is_file() else None, best_score, None, resumed_from,
                         time.perf_counter() - started)
    if trainer.is_global_zero and train_cfg["export"]:
        result.model_dir = export(run_dir, run_dir / "model", "best" if result.best_checkpoint else "last")
    return result


def initialise_from(model, model_dir: str | os.PathLike, instruments: dict[str, int]) -> list[str]:
    """Copy the weights of the trained model in ``model_dir`` into ``model`` (same class and sizes). Rows of
    :data:`INSTRUMENT_ROWS` go by instrument name (``instruments``: name -> row in ``model``); instruments the
    source does not know keep their rows. Returns those instruments' names. MididdspError on any mismatch."""
    from mididdsp.models import load_model

    source = load_model(model_dir)
    if type(source) is not type(model):
        raise MididdspError(f"train.init_from: {model_dir} is a {type(source).__name__}, this config trains a "
                            f"{type(model).__name__}")
    source_rows = source.metadata.get("instruments", {})
    target = model.state_dict()
    weights = {}
    for name, value in source.state_dict().items():
        current = target.get(name)
        instrument_rows = name in INSTRUMENT_ROWS
        fits = current is not None and (value.shape[1:] == current.shape[1:] if instrument_rows
                                        else value.shape == current.shape)
        if not fits:
            raise MididdspError(f"train.init_from: {model_dir} does not fit this config's model ({name}: "
                                f"{tuple(value.shape)} there, {None if current is None else tuple(current.shape)} "
                                "here); use the config it was trained with")
        if instrument_rows:
            value_rows = current.clone()
            for instrument, row in instruments.items():
                if instrument in source_rows:
                    value_rows[row] = value[source_rows[instrument]]
            value = value_rows
        weights[name] = value
    missing = sorted(set(target) - set(weights))
    if missing:
        raise MididdspError(f"train.init_from: {model_dir} lacks {', '.join(missing[:3])}; use the config it was "
                            "trained with")
    model.load_state_dict(weights)
    return sorted(set(instruments) - set(source_rows))


def _quiet_lightning() -> None:
    """Drop Lightning's advertising tip and warnings that are expected here (e.g. a resumed run's checkpoint
    folder is not empty), so the output shows what matters."""
    import logging
    import warnings

    class DropTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.getMessage()).startswith("\N{ELECTRIC LIGHT BULB}")

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(type(f).__name__ == "DropTips" for f in logger.filters):
            logger.addFilter(DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def _best_score(callbacks: list) -> float | None:
    for callback in callbacks:
        if getattr(callback, "monitor", None) == "val_loss" and callback.best_model_score is not None:
            return float(callback.best_model_score)
    return None


# --- export ------------------------------------------------------------------------------------------------------

def export(run_dir: str | os.PathLike, model_dir: str | os.PathLike, checkpoint: str = "best") -> Path:
    """Write a model directory (mididdsp.models.save_model) from a run's checkpoint: ``best`` (falls back to
    ``last`` when the run has no validation data), ``last`` or a checkpoint path. Stores the instrument mapping,
    the data statistics and the provenance (config, steps, validation loss)."""
    import torch

    from mididdsp.datasets.shards import load_manifest
    from mididdsp.models import save_model
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise MididdspError(f"{run_dir}: not a training run directory ({CONFIG_FILE} is missing)")
    config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    if checkpoint in ("best", "last"):
        path = run_dir / CHECKPOINT_DIR / f"{checkpoint}.ckpt"
        if checkpoint == "best" and not path.is_file():
            path = run_dir / CHECKPOINT_DIR / LAST
    else:
        path = Path(checkpoint)
    if not path.is_file():
        raise MididdspError(f"{path}: no such checkpoint (expected best, last or a .ckpt file of this run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = {name[len("model."):]: value for name, value in state["state_dict"].items()
                   if name.startswith("model.")}
        model = task_module(config.get("task", "autoencoder")).build_model(config["model"])
        model.load_state_dict(weights)
    except Exception as error:  # noqa: BLE001 - truncated / foreign / mismatched checkpoint: one user problem
        raise MididdspError(f"{path}: unreadable or mismatched checkpoint ({str(error).splitlines()[0][:160]})") from None
    if (run_dir / DATASET_FILE).is_file():
        dataset = json.loads((run_dir / DATASET_FILE).read_text())
    else:  # a run directory from before dataset.json: read the data folder's manifest
        dataset = load_manifest(config["data"]["dir"]) if Path(config["data"]["dir"]).is_dir() else {}
    val_loss = None
    for key, value in state.get("callbacks", {}).items():
        if "val_loss" in key and value.get("best_model_score") is not None:
            val_loss = float(value["best_model_score"])
    extra = {
        **dataset.get("extra", {}),
        "instruments": dataset.get("instruments") or {"default": 0},
        "statistics": dataset.get("statistics") or {},
        "training": {"config": config, "checkpoint": str(path.resolve()), "global_step": int(state["global_step"]),
                     "epoch": int(state.get("epoch", 0)), "best_val_loss": val_loss,
                     "exported": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    return save_model(model.eval(), model_dir, extra=extra)


# --- command line ------------------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.split()[-1]
    parser.set_defaults(_training_command=command)
    if command == "export":
        parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory made by `mididdsp train`")
        parser.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL_DIR",
                            help="model directory to write")
        parser.add_argument("--checkpoint", default="best",
                            help="best (lowest validation loss; default), last, or a checkpoint path")
        return
    parser.add_argument("config", metavar="CONFIG",
                        help="YAML config, or a packaged config name (autoencoder_tiny, autoencoder, synthesis_coder)")
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default: train.run_dir)")
    # REMAINDER so that --run-dir may also come after the overrides (taken out again in run()).
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="dotted overrides, e.g. data.dir=prepared train.max_steps=2000")


def _split_run_dir(words: list[str], run_dir: Path | None) -> tuple[list[str], Path | None]:
    """Take ``--run-dir DIR`` / ``--run-dir=DIR`` out of the words after CONFIG."""
    overrides = []
    while words:
        word = words.pop(0)
        if word == "--run-dir":
            if not words:
                raise MididdspError("--run-dir needs a directory")
            run_dir = Path(words.pop(0))
        elif word.startswith("--run-dir="):
            run_dir = Path(word.split("=", 1)[1])
        elif word.startswith("-"):
            raise MididdspError(f"unknown option {word!r} (expected --run-dir DIR or section.key=value overrides)")
        else:
            overrides.append(word)
    return overrides, run_dir


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "_training_command", None) or getattr(args, "command", "train")
    if command == "export":
        model_dir = export(args.run_dir, args.output, args.checkpoint)
        print(f"exported {args.run_dir} ({args.checkpoint}) -> {model_dir}")
        return 0
    overrides, run_dir = _split_run_dir(list(args.overrides), args.run_dir)
    config = load_config(args.config, overrides)
    result = train(config, run_dir)
    if result.model_dir is not None:
        loss = f", best validation loss {result.best_val_loss:.3f}" if result.best_val_loss is not None else ""
        print(f"trained {result.global_step} steps in {result.run_dir}{loss}; model: {result.model_dir}")
    return 0
