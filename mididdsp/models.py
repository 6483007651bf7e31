"""Models on disk: a directory holding ``config.yaml`` (the resolved settings) and ``weights.pt`` (a plain state
dict that loads with ``torch.load(weights_only=True)``: no code runs when a model is loaded).

    model/
      config.yaml     model: {...}  (the architecture), plus instruments, statistics, provenance
      weights.pt      state dict

``load_model(path)`` never imports Lightning and never downloads anything.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from mididdsp.errors import ModelError

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.pt"


def save_model(model: torch.nn.Module, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model`` (which has ``.config.to_dict()``) to ``directory`` atomically (a temp dir renamed into place).

    ``extra`` (instruments, statistics, training provenance, ...) is stored beside ``model:`` in config.yaml.
    """
    from omegaconf import OmegaConf

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        config = {"format": 1, "model_type": type(model).__name__, "model": model.config.to_dict(), **(extra or {})}
        OmegaConf.save(OmegaConf.create(config), staging / CONFIG_FILE)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        if directory.exists():
            backup = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            directory.rename(backup)
            staging.rename(directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_model_config(directory: str | os.PathLike) -> dict:
    """The plain-dict config of a model directory (ModelError if missing or unreadable)."""
    from omegaconf import OmegaConf

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such model directory (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(f"{directory}: not a model directory, {CONFIG_FILE} is missing")
    try:
        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    except Exception as error:  # noqa: BLE001 - any parse failure is the same user problem
        raise ModelError(f"{config_path}: unreadable model config ({error.__class__.__name__})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise ModelError(f"{config_path}: not a mididdsp model config (no 'model' section)")
    return config


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a model directory for inference (eval mode). The config is attached as ``model.metadata``."""
    from mididdsp.synthesis.autoencoder import DDSPAutoencoder

    directory = Path(directory)
    config = read_model_config(directory)
    model_types = {"DDSPAutoencoder": DDSPAutoencoder}
    model_type = config.get("model_type", "DDSPAutoencoder")
    if model_type not in model_types:
        raise ModelError(f"{directory}: unknown model type {model_type!r} (expected one of {sorted(model_types)})")
    try:
        model = model_types[model_type](config["model"])
    except (TypeError, ValueError) as error:
        raise ModelError(f"{directory / CONFIG_FILE}: invalid model settings: {error}") from None
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelError(f"{directory}: {WEIGHTS_FILE} is missing")
    try:
        state = torch.load(weights_path, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - truncated/corrupt/mismatched weights are one user problem
        raise ModelError(f"{weights_path}: corrupt or mismatched weights ({str(error).splitlines()[0][:160]})") from None
    model.metadata = config
    return model.to(device).eval()
