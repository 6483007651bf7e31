"""Training batches that are a pure function of (seed, step, rank): what makes resuming a run exact.

A checkpoint stores the global step; :class:`StepSampler` restarts the sample stream at that step, and
:class:`SeededCrops` derives every crop (which recording, where) from its sample number alone, not from the
state of a DataLoader worker's RNG. So a run killed at any step and resumed sees the same batches as one that
never stopped, with any number of workers.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mididdsp.datasets.torch_data import CropDataset
from mididdsp.errors import MididdspError
from mididdsp.training.datamodule import PreparedDataModule

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): spreads (seed, number) over the seed space


def mix_seed(seed: int, number: int) -> int:
    """A 63-bit seed for item ``number`` of a stream seeded with ``seed`` (distinct seeds give unrelated streams)."""
    return (seed * _MIX + number * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 63)


class StepSampler(Sampler[int]):
    """Endless sample numbers for one rank, from ``start_step`` on.

    Batch ``k`` of rank ``r`` (of ``world_size``) holds sample numbers ``(k * world_size + r) * batch_size + j``
    for ``j < batch_size``: the ranks together cover the stream once, and batch ``k`` is the same whether the
    run started at 0 or resumed at ``k``. No ``__len__``: Lightning treats the loader as endless (use max_steps).
    """

    def __init__(self, batch_size: int, start_step: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size, self.start_step, self.rank, self.world_size = batch_size, start_step, rank, world_size

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            first = (step * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)
            step += 1


class SeededCrops(Dataset):
    """Sample number -> a training crop. Epoch ``n // len(crops)`` is a seeded permutation of the crop items;
    the crop position is drawn from an RNG seeded by (seed, sample number)."""

    def __init__(self, crops: CropDataset, seed: int) -> None:
        if len(crops) == 0:
            raise MididdspError(f"{crops.data_dir}: no training recordings (the 'train' split is empty; "
                                "add recordings or lower --valid/--test in `mididdsp prepare`)")
        self.crops, self.seed = crops, seed
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.crops)

    def order(self, epoch: int) -> torch.Tensor:
        """The item permutation of ``epoch`` (cached: consecutive samples share it)."""
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, -1 - epoch))
            self._order = (epoch, torch.randperm(len(self.crops), generator=generator))
        return self._order[1]

    def __getitem__(self, number: int) -> dict:
        epoch, position = divmod(number, len(self.crops))
        index = int(self.order(epoch)[position])
        with torch.random.fork_rng(devices=[]):  # CropDataset draws the crop from torch's global CPU RNG
            torch.manual_seed(mix_seed(self.seed, number))
            return self.crops[index]


class StepDataModule(PreparedDataModule):
    """:class:`PreparedDataModule` whose training loader restarts at the trainer's global step (exact resume)."""

    def __init__(self, data_dir: str | Path, batch_size: int = 16, num_workers: int = 2, crop_seconds: float = 4.0,
                 eval_hop_seconds: float | None = None, seed: int = 0, pin_memory: bool = False) -> None:
        super().__init__(data_dir, batch_size, num_workers, crop_seconds, eval_hop_seconds, seed=seed,
                         pin_memory=pin_memory)

    def has_validation(self) -> bool:
        self.setup("validate")
        return len(self.datasets["valid"]) > 0

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = StepSampler(self.batch_size, start, rank, world)
        return DataLoader(SeededCrops(self.datasets["train"], self.seed), batch_size=self.batch_size,
                          sampler=sampler, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=False)
