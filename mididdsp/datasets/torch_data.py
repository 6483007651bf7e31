"""PyTorch datasets over a folder written by ``mididdsp prepare`` (shards + manifest.json).

:class:`CropDataset`       fixed-length crops: random for training, deterministic (a fixed hop) for validation.
:class:`RecordingDataset`  whole recordings, for note-level work (batch with :func:`pad_collate` or batch_size 1).

Crops start on frame boundaries so audio and frames stay aligned: a crop of ``n_samples`` (a multiple of 64)
starting at frame ``s`` holds audio samples ``[64 s, 64 s + n_samples)`` and the centred frames
``[s, s + n_samples // 64 + 1)`` (4 s -> 64000 samples, 1001 frames; the last frame describes the instant just
after the crop, as in mididdsp.dsp.core.n_frames).

Each item is a dict (batches stack them along a new first dimension):
    audio          float32 [samples]   16 kHz mono
    f0_hz          float32 [frames]    CREPE f0, Hz
    confidence     float32 [frames]    0..1
    loudness_db    float32 [frames]    A-weighted, dB (floor -80)
    note_pitch     float32 [frames]    MIDI pitch of the sounding note, 0 in rests / without a score
    note_onset     float32 [frames]    1 on a note's first frame
    note_offset    float32 [frames]    1 on a note's last frame
    note_index     int64   [frames]    index of the note in its recording's note list, -1 in rests / no score
    note_position  float32 [frames]    0..1 position within the note, 0 in rests
    note_velocity  float32 [frames]    MIDI velocity 0..127, 0 in rests
    mask           float32 [frames]    1 for real frames, 0 for padding
    length         int64   []          real audio samples in ``audio`` (the rest is zero padding)
    start_frame    int64   []          where the crop starts in its recording (frames; samples = 64 x this)
    instrument     int64   []          instrument id (mapping: manifest["instruments"], also ``.instruments``)
    has_notes      bool    []          whether the recording has an aligned score
    loudness_reference_db float32 []   the whole recording's level (``mididdsp.dsp.loudness_reference``), dB
    id             str                 recording id
RecordingDataset items also carry ``notes`` float64 [n_notes, 4] (start_s, end_s, pitch, velocity).

Recordings shorter than a crop are, with ``short="pad"`` (default), padded: zeros for audio, the last f0
held, confidence 0, loudness -80 dB, rests for the note arrays, and ``mask`` 0 over the padding;
with ``short="skip"`` they are left out of the dataset.

Workers: shards are opened lazily in each worker process and memory-mapped (a small LRU of open shards), so
``num_workers > 0`` works and a crop reads only its own slice of the file.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mididdsp.datasets import shards as shard_io
from mididdsp.dsp.core import DB_FLOOR, HOP_SIZE, SAMPLE_RATE
from mididdsp.dsp.spectral import loudness_reference
from mididdsp.errors import MididdspError

FLOAT_FRAME_ARRAYS = ("f0_hz", "confidence", "loudness_db", "note_pitch", "note_onset", "note_offset",
                      "note_position", "note_velocity")
# Values that fill frames past the end of a short recording (f0 is held instead, see _pad_frames).
FRAME_PAD_VALUES = {"confidence": 0.0, "loudness_db": DB_FLOOR, "note_pitch": 0.0, "note_onset": 0.0,
                    "note_offset": 0.0, "note_position": 0.0, "note_velocity": 0.0, "note_index": -1, "mask": 0.0}


def crop_samples(crop_seconds: float) -> int:
    """Crop length in samples for ``crop_seconds``, rounded down to whole hops (at least one hop)."""
    return max(HOP_SIZE, int(round(crop_seconds * SAMPLE_RATE)) // HOP_SIZE * HOP_SIZE)


class _PreparedDataset(Dataset):
    """Recordings of some splits of a prepared folder, with lazily opened, memory-mapped shards."""

    def __init__(self, data_dir: str | Path, split: str | Sequence[str] | None = "train",
                 instruments: Sequence[str] | None = None, max_open_shards: int = 32) -> None:
        self.data_dir = Path(data_dir)
        self.manifest = shard_io.load_manifest(self.data_dir)
        splits = None if split is None else {split} if isinstance(split, str) else set(split)
        unknown = (splits or set()) - set(shard_io.SPLITS)
        if unknown:
            raise MididdspError(f"split {sorted(unknown)}: expected one of {', '.join(shard_io.SPLITS)}")
        self.instruments: dict[str, int] = self.manifest["instruments"]
        self.recordings = [r for r in self.manifest["recordings"]
                           if (splits is None or r["split"] in splits)
                           and (instruments is None or r["instrument"] in instruments)]
        self.max_open_shards = max_open_shards
        self._open: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._references: dict[str, float] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # memory maps are reopened by each worker, not pickled
        return state

    def shard(self, recording: dict) -> dict[str, np.ndarray]:
        """The memory-mapped arrays of a recording's shard (LRU of ``max_open_shards`` per process)."""
        key = recording["shard"]
        arrays = self._open.pop(key, None)
        if arrays is None:
            path = self.data_dir / key
            try:
                arrays = shard_io.open_shard(path)
            except (OSError, ValueError) as error:
                raise MididdspError(f"{path}: cannot read shard ({error}); re-run `mididdsp prepare`") from None
            while len(self._open) >= self.max_open_shards:
                self._open.popitem(last=False)
        self._open[key] = arrays
        return arrays

    def loudness_reference(self, recording: dict) -> float:
        """The recording's level in dB, from its whole loudness curve (once per recording and process)."""
        key = recording["shard"]
        if key not in self._references:
            loudness = torch.from_numpy(np.array(self.shard(recording)["loudness_db"], np.float32))
            self._references[key] = float(loudness_reference(loudness))
        return self._references[key]

    def _item(self, recording: dict, start_frame: int, n_samples: int | None) -> dict:
        """Audio and frame arrays of ``recording`` from ``start_frame`` for ``n_samples`` samples (None: to the
        end), padded to length when the recording is shorter."""
        arrays = self.shard(recording)
        total = int(recording["n_samples"])
        first = start_frame * HOP_SIZE
        if n_samples is None:
            n_samples = total - first
        frames = n_samples // HOP_SIZE + 1
        audio = np.asarray(arrays["audio"][first:first + n_samples], np.float32) * float(arrays["audio_scale"])
        item: dict = {"audio": _pad(audio, n_samples, 0.0)}
        real_frames = min(frames, int(recording["n_frames"]) - start_frame)
        for name in FLOAT_FRAME_ARRAYS:
            values = np.asarray(arrays[name][start_frame:start_frame + real_frames], np.float32)
            fill = values[-1] if name == "f0_hz" and values.size else FRAME_PAD_VALUES.get(name, 0.0)
            item[name] = _pad(values, frames, fill)
        note_index = np.asarray(arrays["note_index"][start_frame:start_frame + real_frames], np.int64)
        item["note_index"] = _pad(note_index, frames, -1)
        item["mask"] = _pad(np.ones(real_frames, np.float32), frames, 0.0)
        item.update({"loudness_reference_db": torch.tensor(self.loudness_reference(recording)),
                     "length": torch.tensor(min(n_samples, total - first)), "start_frame": torch.tensor(start_frame),
                     "instrument": torch.tensor(self.instruments[recording["instrument"]]),
                     "has_notes": torch.tensor(bool(recording["has_notes"])), "id": recording["id"]})
        return item


def _pad(values: np.ndarray, length: int, fill: float) -> torch.Tensor:
    """[n] -> tensor [length], ``values`` followed by ``fill``."""
    out = np.full(length, fill, dtype=values.dtype)
    out[:min(length, values.shape[0])] = values[:length]
    return torch.from_numpy(out)


class CropDataset(_PreparedDataset):
    """Fixed-length crops of the recordings of ``split``.

    random=True (training): each recording contributes ``max(1, round(duration / crop_seconds))`` items per
        epoch (long recordings are seen proportionally more often); each item is a crop at a uniformly random
        frame, drawn from torch's RNG (seeded per DataLoader worker, so reproducible with a seeded generator).
    random=False (validation / test): crops at frames 0, hop, 2 hop, ... that fit in the recording
        (``hop_seconds`` defaults to the crop length); always the same.
    short: "pad" (default) or "skip" for recordings shorter than a crop (see module docstring).
    """

    def __init__(self, data_dir: str | Path, split: str | Sequence[str] | None = "train", crop_seconds: float = 4.0,
                 random: bool = True, hop_seconds: float | None = None, short: str = "pad",
                 instruments: Sequence[str] | None = None, max_open_shards: int = 32) -> None:
        super().__init__(data_dir, split, instruments, max_open_shards)
        if short not in ("pad", "skip"):
            raise MididdspError(f"short={short!r}: expected 'pad' or 'skip'")
        self.crop_samples = crop_samples(crop_seconds)
        self.crop_frames = self.crop_samples // HOP_SIZE + 1
        self.random = random
        if short == "skip":
            self.recordings = [r for r in self.recordings if r["n_samples"] >= self.crop_samples]
        self.items: list[tuple[int, int]] = []  # (recording index, start frame; -1 = random)
        hop_frames = max(1, crop_samples(hop_seconds if hop_seconds else crop_seconds) // HOP_SIZE)
        for index, recording in enumerate(self.recordings):
            last_start = self.last_start_frame(recording)
            if random:
                count = max(1, round(recording["n_samples"] / self.crop_samples))
                self.items.extend([(index, -1)] * count)
            else:
                self.items.extend((index, start) for start in range(0, last_start + 1, hop_frames))

    def last_start_frame(self, recording: dict) -> int:
        """Largest start frame whose crop lies inside the recording (0 when it is shorter than a crop)."""
        return max(0, (int(recording["n_samples"]) - self.crop_samples) // HOP_SIZE)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        recording_index, start = self.items[index]
        recording = self.recordings[recording_index]
        if start < 0:
            start = int(torch.randint(0, self.last_start_frame(recording) + 1, ()).item())
        return self._item(recording, start, self.crop_samples)


class RecordingDataset(_PreparedDataset):
    """Whole recordings of ``split`` (one item each), with their note list under ``notes``."""

    def __len__(self) -> int:
        return len(self.recordings)

    def __getitem__(self, index: int) -> dict:
        recording = self.recordings[index]
        item = self._item(recording, 0, None)
        item["notes"] = torch.from_numpy(np.array(self.shard(recording)["notes"], np.float64).reshape(-1, 4))
        return item


def pad_collate(items: list[dict]) -> dict:
    """Batch items of different lengths (whole recordings): audio and frame arrays padded at the end to the
    longest (pad values as for short crops, ``mask`` 0), ``notes`` padded with rows of -1."""
    batch: dict = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], str):
            batch[key] = values
        elif values[0].dim() == 0:
            batch[key] = torch.stack(values)
        else:
            length = max(v.shape[0] for v in values)
            padded = []
            for v in values:
                fill = (v[-1].item() if key == "f0_hz" and v.numel() else -1 if key in ("notes", "note_index")
                        else FRAME_PAD_VALUES.get(key, 0.0))
                extra = torch.full((length - v.shape[0], *v.shape[1:]), fill, dtype=v.dtype)
                padded.append(torch.cat([v, extra]))
            batch[key] = torch.stack(padded)
    return batch
