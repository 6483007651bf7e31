"""Atomic file writes: the target appears complete or not at all.

Everything is written to a temp file ``.<name>.tmp-XXXX<suffix>`` in the target's folder and renamed over the
target with ``os.replace`` only once writing succeeded; on any error (KeyboardInterrupt included) the temp file
is removed and the old target is left untouched. A process killed outright (``kill -9``) can leave a temp file
behind; :func:`remove_temp_files` clears those on the next run. ``durable=True`` also fsyncs the file before
the rename and the folder after it, so that the new content survives a power cut (checkpoints, shards).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

TEMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", durable: bool = False) -> Iterator[Path]:
    """``with atomic_path(path) as temp:`` write the file named ``temp``; it replaces ``path`` on success.

    Parent folders are created. ``suffix`` ends the temp name, for writers that pick the format from the
    extension (soundfile, matplotlib). The result gets ordinary permissions (``0o666 & ~umask``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARKER}", suffix=suffix, dir=path.parent)
    os.close(descriptor)
    temp = Path(temp_name)
    try:
        yield temp
        if durable:
            _fsync_file(temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes it private
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_directory(path.parent)  # make the rename itself durable


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", durable: bool = False, **kwargs: Any) -> Iterator[IO]:
    """:func:`atomic_path`, yielding the temp file opened with ``open(temp, mode, **kwargs)``."""
    with atomic_path(path, durable=durable) as temp:
        with open(temp, mode, **kwargs) as file:
            yield file


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    """Write ``text`` to ``path`` atomically, newlines untranslated."""
    with atomic_open(path, "w", durable=durable, newline="") as file:
        file.write(text)


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files (``.*.tmp-*``) that a killed run left in ``folder``; returns them."""
    removed = []
    for temp in Path(folder).glob(f".*{TEMP_MARKER}*"):
        temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Best effort: some filesystems refuse to open or fsync a folder."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
