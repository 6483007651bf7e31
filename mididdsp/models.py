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

from mididdsp.errors import ModelError

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.pt"


def save_model(model: torch.nn.Module, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model`` (which has ``.config.to_dict()``) to ``directory`` atomically (a temp dir renamed into place).

    ``extra`` (instruments, statistics, training provenance, ...) is stored beside ``model:`` in config.yaml.
    """
    import torch
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
    """The plain-dict config of a model directory (ModelError if missing or unreadable). Read by PyYAML's C loader
    where it is built (a generator's config, 3 400 lines of data statistics, took OmegaConf 0.16 s and the C loader
    0.01 s of every render's start-up): model configs are plain YAML that this package writes, no interpolation."""
    import yaml

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such model directory (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(f"{directory}: not a model directory, {CONFIG_FILE} is missing")
    try:
        config = yaml.load(config_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception as error:  # noqa: BLE001 - any parse failure is the same user problem
        raise ModelError(f"{config_path}: unreadable model config ({error.__class__.__name__})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise ModelError(f"{config_path}: not a mididdsp model config (no 'model' section)")
    return config


def settings_from_dict(cls, values: dict):
    """``cls(**values)`` for a dataclass of model settings (a config's ``model:`` section); an unknown key is a
    ValueError that lists the known ones."""
    from dataclasses import fields

    known = {field.name for field in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown model settings {unknown}; known: {sorted(known)}")
    return cls(**values)


def model_metadata(model) -> dict:
    """The config a model was loaded with (``model.metadata``: instruments, statistics, expression ranges, ...),
    or ``{}`` for a model built in code."""
    return getattr(model, "metadata", None) or {}


def update_model_config(directory: str | os.PathLike, updates: dict) -> dict:
    """Set top-level keys of a model directory's config.yaml (``model:`` itself cannot change), atomically.

    Returns the new config. Used for what is measured after training, e.g. the expression ranges."""
    from omegaconf import OmegaConf

    from mididdsp.fileio import write_text_atomic

    if "model" in updates or "model_type" in updates:
        raise ModelError("update_model_config: the architecture ('model', 'model_type') cannot be changed")
    config = {**read_model_config(directory), **updates}
    write_text_atomic(Path(directory) / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(config)))
    return config


# model_type in config.yaml -> "module:class" (imported only when such a model is loaded)
MODEL_TYPES = {"DDSPAutoencoder": "mididdsp.synthesis.autoencoder:DDSPAutoencoder",
               "SynthesisGenerator": "mididdsp.synthesis.generator:SynthesisGenerator",
               "ExpressionPrior": "mididdsp.expression.prior:ExpressionPrior"}


def model_class(model_type: str) -> type:
    import importlib

    module_name, class_name = MODEL_TYPES[model_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu",
               expected: tuple[str, ...] | None = None) -> torch.nn.Module:
    """Load a model directory for inference (eval mode). The config is attached as ``model.metadata``.

    ``expected``: the model types the caller can use (ModelError naming the directory otherwise)."""
    import torch

    directory = Path(directory)
    config, model_type = read_typed_config(directory, expected)
    model = _from_settings(directory, model_class(model_type), config)
    weights_path = _weights_path(directory)
    try:
        state = torch.load(weights_path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - torch's own text (about weights_only and PyTorch 2.6) only confuses here
        state = None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise _corrupt(weights_path)
    check_state_fits({name: tuple(value.shape) for name, value in model.state_dict().items()},
                     {name: tuple(value.shape) for name, value in state.items()}, weights_path,
                     directory / CONFIG_FILE)
    model.load_state_dict(state)
    model.metadata = config
    return model.to(device).eval()


def read_typed_config(directory: Path, expected: tuple[str, ...] | None) -> tuple[dict, str]:
    """(config, model type) of a model directory; ModelError for an unknown type or one not in ``expected``."""
    config = read_model_config(directory)
    model_type = config.get("model_type", "DDSPAutoencoder")
    if model_type not in MODEL_TYPES:
        raise ModelError(f"{directory}: unknown model type {model_type!r} (expected one of {sorted(MODEL_TYPES)})")
    if expected is not None and model_type not in expected:
        raise ModelError(f"{directory}: a {model_type} model, expected {' or '.join(expected)}")
    return config, model_type


def load_arrays(directory: str | os.PathLike, expected: tuple[str, ...], settings_class: type,
                expected_shapes) -> tuple[object, dict, dict]:
    """A model directory without torch, for the inference path's models (:mod:`mididdsp.synthesis.inference`,
    :mod:`mididdsp.expression.prior_inference`): (its settings, ``settings_class.from_dict`` of the ``model:``
    section; the whole config; ``{parameter name: numpy array}``). ``expected_shapes(settings)`` gives the state
    dict's names and shapes, as the torch module has them.
    ModelError (one line, naming the file) when the config or the weights are missing, unreadable or do not fit."""
    from mididdsp.weights import WeightsError, read_state_dict

    directory = Path(directory)
    config, _ = read_typed_config(directory, expected)
    settings = _from_settings(directory, settings_class.from_dict, config)
    weights_path = _weights_path(directory)
    try:
        state = read_state_dict(weights_path)
    except (WeightsError, OSError):
        raise _corrupt(weights_path) from None
    check_state_fits(expected_shapes(settings), {name: value.shape for name, value in state.items()}, weights_path,
                     directory / CONFIG_FILE)
    return settings, config, state


def _from_settings(directory: Path, build, config: dict):
    """``build(config["model"])`` (a module or a settings dataclass); ModelError naming config.yaml if invalid."""
    try:
        return build(config["model"])
    except (TypeError, ValueError) as error:
        raise ModelError(f"{directory / CONFIG_FILE}: invalid model settings: {error}") from None


def _weights_path(directory: Path) -> Path:
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{directory}: {WEIGHTS_FILE} is missing")
    return path


def _corrupt(weights_path: Path) -> ModelError:
    return ModelError(f"{weights_path}: the weights file is corrupt, truncated or not a mididdsp weights file "
                      "(export or copy the model again)")


def check_state_fits(expected: dict[str, tuple], found: dict[str, tuple], weights_path: Path,
                     config_path: Path) -> None:
    """ModelError (one line) when a readable state dict's shapes (``found``, name -> shape) do not fit those of the
    model that ``config_path`` describes (``expected``)."""
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    reshaped = [name for name in expected if name in found and tuple(found[name]) != tuple(expected[name])]
    if not (missing or unexpected or reshaped):
        return
    details = []
    if reshaped:
        name = reshaped[0]
        details.append(f"{len(reshaped)} of another shape (e.g. {name}: {list(found[name])} in the file, "
                       f"{list(expected[name])} in the config)")
    if missing:
        details.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    raise ModelError(f"{weights_path}: mismatched weights, they do not fit the model in {config_path.name}: "
                     + "; ".join(details))
