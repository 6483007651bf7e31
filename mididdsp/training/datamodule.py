"""LightningDataModule over a folder written by ``mididdsp prepare`` (see mididdsp.datasets.torch_data)."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mididdsp.datasets.shards import load_manifest
from mididdsp.datasets.torch_data import CropDataset, RecordingDataset, pad_collate


class PreparedDataModule(pl.LightningDataModule):
    """Train: random ``crop_seconds`` crops (shuffled, reproducible from ``seed``); valid / test: deterministic
    crops every ``eval_hop_seconds`` (default: the crop length). ``recording_dataloader(split)`` gives whole
    recordings for note-level work.

    ``instruments`` (name -> id) and ``statistics`` (per-instrument pitch / loudness distributions) come from the
    manifest; save the mapping with a model, since ids change when instruments are added to the data.
    """

    def __init__(self, data_dir: str | Path, batch_size: int = 16, num_workers: int = 2, crop_seconds: float = 4.0,
                 eval_hop_seconds: float | None = None, short: str = "pad", seed: int = 0,
                 pin_memory: bool = False, drop_last: bool = False) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.crop_seconds = crop_seconds
        self.eval_hop_seconds = eval_hop_seconds
        self.short = short
        self.seed = seed
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        manifest = load_manifest(self.data_dir)
        self.instruments: dict[str, int] = manifest["instruments"]
        self.statistics: dict = manifest["statistics"]
        self.datasets: dict[str, CropDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, random in (("train", True), ("valid", False), ("test", False)):
            if split not in self.datasets:
                self.datasets[split] = CropDataset(self.data_dir, split, self.crop_seconds, random=random,
                                                   hop_seconds=self.eval_hop_seconds, short=self.short)

    def _loader(self, dataset, shuffle: bool, collate_fn=None, batch_size: int | None = None,
                drop_last: bool = False) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)  # shuffle order and worker seeds (random crops)
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory, drop_last=drop_last, generator=generator,
                          collate_fn=collate_fn)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.datasets["train"], shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.datasets["valid"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader(self.datasets["test"], shuffle=False)

    def recording_dataloader(self, split: str = "test", batch_size: int = 1) -> DataLoader:
        """Whole recordings of ``split`` (padded to the longest in a batch, with ``mask``)."""
        return self._loader(RecordingDataset(self.data_dir, split), shuffle=False, collate_fn=pad_collate,
                            batch_size=batch_size)
