"""A thin LightningModule around :class:`mididdsp.synthesis.autoencoder.DDSPAutoencoder`.

The plain model holds all the maths; this adds the loss (multi-scale spectral), the optimizer (Adam with an
exponential learning-rate decay per step) and step-seeded randomness: the filtered-noise synth draws its noise
inside an RNG seeded by (seed, global step, rank), so a resumed run repeats the exact noise of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytorch_lightning as pl
import torch

from mididdsp.dsp import multiscale_spectral_loss
from mididdsp.synthesis.autoencoder import DDSPAutoencoder
from mididdsp.training.data import mix_seed

EXAMPLE_KEYS = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")


class ExponentialDecay:
    """LR factor ``decay_rate ** (step / decay_steps)`` (DDSP: 0.98 every 10k steps). A class, not a lambda, so
    the scheduler's state (saved in checkpoints) holds its settings."""

    def __init__(self, decay_rate: float, decay_steps: int) -> None:
        self.decay_rate, self.decay_steps = float(decay_rate), int(decay_steps)

    def __call__(self, step: int) -> float:
        return self.decay_rate ** (step / self.decay_steps)


def adam_with_decay(model: torch.nn.Module, train_config: dict) -> dict:
    """Lightning's optimizer dict for every task: Adam at ``train.lr`` over the trainable parameters, its rate
    decayed exponentially per step (``lr_decay_rate``, ``lr_decay_steps``)."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=float(train_config["lr"]))
    decay = ExponentialDecay(train_config.get("lr_decay_rate", 0.98), train_config.get("lr_decay_steps", 10000))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def on_cuda(trainer: pl.Trainer | None) -> bool:
    """Whether ``trainer`` runs on a CUDA device (no trainer: whether CUDA is available); for ``pin_memory``."""
    if trainer is None:
        return torch.cuda.is_available()
    return getattr(getattr(trainer, "strategy", None), "root_device", torch.device("cpu")).type == "cuda"


def logging_step(module: pl.LightningModule) -> bool:
    """Whether this training step's values reach the loggers (every ``train.log_every`` steps, as Lightning
    writes them). Logging only then keeps the per-step metrics off the host: a progress-bar metric is read with
    ``.item()`` at every step it is logged, a device sync on an accelerator."""
    trainer = module.trainer
    every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
    return (module.global_step + 1) % every == 0 or bool(getattr(trainer, "should_stop", False))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's RNG (CPU, and the current CUDA device if used) seeded, restoring it after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class AutoencoderModule(pl.LightningModule):
    """Training wrapper. ``model_config``: the ``model:`` section (AutoencoderConfig fields);
    ``train_config``: the ``train:`` section (lr, lr_decay_rate, lr_decay_steps, seed, examples, ...)."""

    def __init__(self, model_config: dict, train_config: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = DDSPAutoencoder(dict(model_config))
        self.train_config = dict(train_config)
        self.seed = int(self.train_config.get("seed", 0))
        self.last_loss: torch.Tensor | None = None       # read by the NonFiniteGuard callback
        self.validation_example: dict | None = None      # first validation batch, for the ExampleWriter callback

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Batch -> model outputs. The network runs under the trainer's autocast (mixed precision); the DSP
        (phase accumulation, FFTs) and the loss always run in float32. Same steps as DDSPAutoencoder.forward
        (the export round-trip test checks that they agree)."""
        audio = batch["audio"]
        outputs = self.model.network_outputs(batch["f0_hz"], batch["loudness_db"], audio, batch["instrument"],
                                             batch.get("loudness_reference_db"))
        with torch.autocast(device_type=audio.device.type, enabled=False):
            outputs = {name: value.float() for name, value in outputs.items()}
            return self.model.synth(outputs, audio.shape[-1], batch["instrument"])

    def compute_loss(self, outputs: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        """Multi-scale spectral loss of the resynthesis against the input audio (scalar)."""
        return multiscale_spectral_loss(outputs["audio"].float(), batch["audio"].float())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step_seed = mix_seed(self.seed, self.global_step * max(1, self.trainer.world_size) + self.global_rank)
        with seeded(step_seed, self.device):
            loss = self.compute_loss(self(batch), batch)
        self.last_loss = loss.detach()
        if logging_step(self):
            batch_size = batch["audio"].shape[0]
            self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Fixed noise per validation batch: the validation loss then depends on the weights only.
        with seeded(mix_seed(self.seed, -(1 << 40) - batch_idx), self.device):
            outputs = self(batch)
        loss = self.compute_loss(outputs, batch)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["audio"].shape[0])
        count = int(self.train_config.get("examples", 2))
        if batch_idx == 0 and count > 0:
            example = {name: outputs[name][:count].detach().float().cpu() for name in EXAMPLE_KEYS}
            example["input"] = batch["audio"][:count].detach().float().cpu()
            example["output"] = outputs["audio"][:count].detach().float().cpu()
            example["id"] = list(batch.get("id", []))[:count]
            self.validation_example = example
        return loss

    def configure_optimizers(self) -> dict:
        return adam_with_decay(self.model, self.train_config)


# --- the task interface of mididdsp.training.train ---------------------------------------------------------------
DATA_DEFAULTS: dict = {}
TRAIN_DEFAULTS: dict = {}


def check_model_config(model_config: dict) -> None:
    """ValueError for unknown or invalid model settings."""
    from mididdsp.synthesis.autoencoder import AutoencoderConfig

    AutoencoderConfig.from_dict(model_config)


def build_data(config: dict):
    """The training data of a resolved config; sets ``model.n_instruments`` from it."""
    from mididdsp.training.data import StepDataModule

    data_cfg, train_cfg = config["data"], config["train"]
    data = StepDataModule(data_cfg["dir"], int(data_cfg["batch_size"]), int(data_cfg["num_workers"]),
                          float(data_cfg["crop_seconds"]), data_cfg.get("eval_hop_seconds"),
                          seed=int(train_cfg["seed"]), pin_memory=torch.cuda.is_available())
    config["model"]["n_instruments"] = max(1, len(data.instruments))
    return data


def build_module(config: dict) -> AutoencoderModule:
    return AutoencoderModule(config["model"], config["train"])


def build_model(model_config: dict) -> DDSPAutoencoder:
    return DDSPAutoencoder(dict(model_config))
