"""A model's ``weights.pt`` read into numpy arrays without torch: the render path's models start without torch's
import (about 1 s of every process that renders).

``weights.pt`` is what ``torch.save`` writes for a plain state dict (:func:`mididdsp.models.save_model`): a zip
archive holding ``<name>/data.pkl``, a pickle of ``{parameter name: tensor}`` in which each tensor is a call of
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``, and ``<name>/data/<key>``, each storage's
raw little-endian bytes (``<name>/byteorder``). Reading it needs only the pickle's few names, mapped here to
numpy; anything else in the pickle (code, another class) is refused, as ``torch.load(weights_only=True)`` does.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

# torch's storage classes (the pickle names the storage's type) -> numpy dtypes, little-endian
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
                  "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
                  "BoolStorage": "?"}


class WeightsError(ValueError):
    """The file is not a state dict saved by torch that this reader understands."""


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_unused) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2``'s view of a storage, as an owned contiguous numpy array."""
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    if any(extent == 0 for extent in size):
        return np.zeros(size, storage.dtype)
    last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
    if offset < 0 or last >= storage.size:
        raise WeightsError(f"a tensor of size {tuple(size)} reaches past its storage of {storage.size} values")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(step * storage.itemsize for step in stride), writeable=False)
    return np.ascontiguousarray(view)


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, handle, archive: zipfile.ZipFile, prefix: str):
        super().__init__(handle)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return np.dtype(STORAGE_DTYPES[name])
        raise WeightsError(f"the pickle names {module}.{name}; expected only tensors in a state dict")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of values)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsError(f"unknown persistent id {pid!r}")
        _, dtype, key, _, count = pid
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            values = np.frombuffer(raw, dtype=dtype)
            if values.size < count:
                raise WeightsError(f"storage {key} holds {values.size} values; the pickle says {count}")
            self.storages[key] = values
        return self.storages[key]


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``{parameter name: float32/int/... numpy array}`` of a state dict saved by ``torch.save`` (the arrays equal
    the tensors ``torch.load`` returns, bit for bit). WeightsError when the file is not one."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise WeightsError("not a torch zip archive (no single data.pkl)")
            prefix = pickles[0][:-len("/data.pkl")]
            byteorder = f"{prefix}/byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
                raise WeightsError("saved big-endian; expected little-endian")
            with archive.open(pickles[0]) as handle:
                state = _StateDictUnpickler(handle, archive, prefix).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError) as error:
        raise WeightsError(f"unreadable ({error.__class__.__name__}: {error})") from None
    if not isinstance(state, dict) or not all(isinstance(value, np.ndarray) for value in state.values()):
        raise WeightsError("not a state dict of tensors")
    return dict(state)
