"""The ``expression_prior`` task: train :class:`mididdsp.expression.prior.ExpressionPrior` on note tables.

    mididdsp train expression_prior data.dir=PREPARED [data.teacher=CODER_DIR] [--run-dir DIR]

Data: the note tables of the teacher cache (:mod:`mididdsp.datasets.teacher`: the notes of every recording and
the expression the synthesis coder extracts from its audio, as ``mididdsp extract`` does), built once with
``mididdsp teacher PREPARED``. A training item is ``segment_notes`` consecutive notes of one training recording,
transposed by a whole number of semitones in ``-transpose .. transpose`` and time-stretched by a factor in
``1 +- stretch`` (the note inputs only; the targets stay). Item ``n`` is a pure function of (seed, n) and the
loader restarts at the trainer's step (:class:`mididdsp.training.data.StepSampler`), so a resumed run sees the
same batches as an uninterrupted one. Validation: the ``valid`` recordings cut into consecutive segments, no
augmentation. Loss: the negative mean per-note log-likelihood (:meth:`ExpressionPrior.log_prob`), in training
with targets smoothed over ``train.bin_smoothing`` bins (validation: the exact likelihood).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mididdsp.errors import MididdspError
from mididdsp.expression.prior import PRIOR_OUTPUTS, ExpressionPrior, PriorConfig
from mididdsp.training.data import StepSampler, mix_seed
from mididdsp.training.module import adam_with_decay, logging_step, on_cuda, seeded

DATA_DEFAULTS: dict = {"teacher": None, "segment_notes": 64, "transpose": 3, "stretch": 0.1}
# bin_smoothing: the training targets' Gaussian width in bins (ExpressionPrior.log_prob_terms); validation and
# evaluation always use the exact likelihood.
TRAIN_DEFAULTS: dict = {"bin_smoothing": 1.5}


def segment_item(arrays: dict, first: int, length: int, transpose: int = 0, stretch: float = 1.0) -> dict:
    """Notes ``first .. first + length`` of a recording, padded to ``length`` rows, as tensors: ``notes``
    [L, 4] (times from the segment's first onset, times ``stretch``; pitch + ``transpose``), ``note_mask`` [L],
    ``targets`` [L, 7], ``target_mask`` [L] (valid and present), ``instrument`` []."""
    notes = arrays["notes"][first:first + length].copy()
    count = len(notes)
    if count:
        notes[:, :2] = (notes[:, :2] - notes[0, 0]) * stretch
        notes[:, 2] = np.clip(notes[:, 2] + transpose, 0, 127)
    padded = np.zeros((length, 4), np.float32)
    padded[:count] = notes
    targets = np.zeros((length, len(PRIOR_OUTPUTS)), np.float32)
    targets[:count] = arrays["targets"][first:first + length]
    mask = np.arange(length) < count
    present = np.zeros(length, bool)
    present[:count] = arrays["present"][first:first + length]
    return {"notes": torch.from_numpy(padded), "note_mask": torch.from_numpy(mask),
            "targets": torch.from_numpy(targets), "target_mask": torch.from_numpy(present),
            "instrument": torch.tensor(arrays["instrument"], dtype=torch.long)}


class SeededSegments(Dataset):
    """Sample number -> a random augmented segment; recordings drawn in proportion to their note count."""

    def __init__(self, recordings: list[dict], segment_notes: int, transpose: int, stretch: float, seed: int) -> None:
        self.recordings = [r for r in recordings if len(r["notes"])]
        if not self.recordings:
            raise MididdspError("no training recordings with notes in the teacher cache (the 'train' split is empty)")
        self.segment_notes, self.transpose, self.stretch, self.seed = segment_notes, transpose, stretch, seed
        counts = np.array([len(r["notes"]) for r in self.recordings], dtype=np.float64)
        self.weights = counts / counts.sum()

    def __len__(self) -> int:
        return int(sum(len(r["notes"]) for r in self.recordings))

    def __getitem__(self, number: int) -> dict:
        rng = np.random.default_rng(mix_seed(self.seed, number))
        arrays = self.recordings[int(rng.choice(len(self.recordings), p=self.weights))]
        first = int(rng.integers(0, max(1, len(arrays["notes"]) - self.segment_notes + 1)))
        transpose = int(rng.integers(-self.transpose, self.transpose + 1))
        stretch = float(rng.uniform(1.0 - self.stretch, 1.0 + self.stretch))
        return segment_item(arrays, first, self.segment_notes, transpose, stretch)


class FixedSegments(Dataset):
    """Every recording cut into consecutive ``segment_notes`` segments (the last one shorter), unaugmented."""

    def __init__(self, recordings: list[dict], segment_notes: int) -> None:
        self.items = [(arrays, first) for arrays in recordings
                      for first in range(0, len(arrays["notes"]), segment_notes)]
        self.segment_notes = segment_notes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        arrays, first = self.items[index]
        return segment_item(arrays, first, self.segment_notes)


class PriorDataModule(pl.LightningDataModule):
    """Note tables of a prepared folder's teacher cache. ``instruments`` (name -> id) come from the manifest;
    ``export_extra`` carries the teacher's expression ranges (what the scaled controls mean) into the model."""

    def __init__(self, data_dir: str | Path, coder_dir: str | Path | None = None, segment_notes: int = 64,
                 transpose: int = 3, stretch: float = 0.1, batch_size: int = 16, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__()
        from mididdsp.datasets.shards import load_manifest
        from mididdsp.datasets.teacher import ensure_teacher, note_tables, table_arrays, teacher_info

        if segment_notes < 1 or transpose < 0 or not 0.0 <= stretch < 1.0:
            raise MididdspError(f"data.segment_notes={segment_notes}, data.transpose={transpose}, "
                                f"data.stretch={stretch}: expected >= 1, >= 0 and in [0, 1)")
        self.data_dir = Path(data_dir)
        self.segment_notes, self.transpose, self.stretch = int(segment_notes), int(transpose), float(stretch)
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.instruments: dict[str, int] = load_manifest(self.data_dir)["instruments"]
        self.statistics: dict = {}
        folder = ensure_teacher(self.data_dir, coder_dir)
        info = teacher_info(folder)
        self.export_extra = {"expression_ranges": info.get("expression_ranges", {}),
                             "teacher": {"model": info.get("model"), "key": folder.name}}
        self.tables = {split: [table_arrays(t, self.instruments) for t in note_tables(self.data_dir, folder, split)
                               if t["instrument"] in self.instruments]
                       for split in ("train", "valid")}

    def has_validation(self) -> bool:
        return any(len(t["notes"]) for t in self.tables["valid"])

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        dataset = SeededSegments(self.tables["train"], self.segment_notes, self.transpose, self.stretch, self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=StepSampler(self.batch_size, start, rank, world),
                          num_workers=self.num_workers, persistent_workers=False, pin_memory=on_cuda(trainer))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(FixedSegments(self.tables["valid"], self.segment_notes), batch_size=self.batch_size,
                          shuffle=False, num_workers=self.num_workers, pin_memory=on_cuda(self.trainer))


class PriorModule(pl.LightningModule):
    """Training wrapper around :class:`ExpressionPrior` (``self.model``): loss, Adam with per-step exponential
    decay, and step-seeded dropout (a resumed run repeats the exact dropout masks of an uninterrupted one)."""

    def __init__(self, model_config: dict, train_config: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = ExpressionPrior(dict(model_config))
        self.train_config = dict(train_config)
        self.seed = int(self.train_config.get("seed", 0))
        self.last_loss: torch.Tensor | None = None       # read by the NonFiniteGuard callback
        self.validation_example: dict | None = None      # no audio examples for this task

    def compute_loss(self, batch: dict, smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
        """Negative mean log-likelihood per counted note (nats; with ``smoothing`` > 0 the smoothed-target
        cross-entropy) and the number of counted notes."""
        log_prob = self.model.log_prob_terms(batch["notes"], batch["note_mask"], batch["instrument"],
                                             batch["targets"], batch["target_mask"], smoothing).sum(dim=-1)
        counted = batch["target_mask"] & batch["note_mask"]
        notes = counted.sum()  # a tensor: int() here would wait for the device at every step
        return -(log_prob * counted).sum() / notes.clamp_min(1), notes

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step_seed = mix_seed(self.seed, self.global_step * max(1, self.trainer.world_size) + self.global_rank)
        with seeded(step_seed, self.device):
            loss, notes = self.compute_loss(batch, float(self.train_config.get("bin_smoothing", 0.0)))
        self.last_loss = loss.detach()
        if logging_step(self):
            size = max(1, int(notes))
            self.log("train_loss", loss, prog_bar=True, batch_size=size)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, notes = self.compute_loss(batch)
        # Weighted by notes, so the epoch's val_loss is the mean per note.
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=max(1, int(notes)))
        return loss

    def configure_optimizers(self) -> dict:
        return adam_with_decay(self.model, self.train_config)


# --- the task interface of mididdsp.training.train ---------------------------------------------------------------
def check_model_config(model_config: dict) -> None:
    """ValueError for unknown or invalid model settings."""
    PriorConfig.from_dict(model_config)


def build_data(config: dict) -> PriorDataModule:
    """The note tables of a resolved config; sets ``model.n_instruments`` from the manifest."""
    data_cfg, train_cfg = config["data"], config["train"]
    data = PriorDataModule(data_cfg["dir"], data_cfg.get("teacher"), int(data_cfg["segment_notes"]),
                           int(data_cfg["transpose"]), float(data_cfg["stretch"]), int(data_cfg["batch_size"]),
                           int(data_cfg["num_workers"]), seed=int(train_cfg["seed"]))
    config["model"]["n_instruments"] = max(1, len(data.instruments))
    return data


def build_module(config: dict) -> PriorModule:
    return PriorModule(config["model"], config["train"])


def build_model(model_config: dict) -> ExpressionPrior:
    return ExpressionPrior(dict(model_config))
