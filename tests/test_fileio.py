"""Atomic writes: the target appears whole or not at all, and no temp file is left behind."""
from __future__ import annotations

import pytest

from mididdsp.fileio import TEMP_MARKER, atomic_open, atomic_path, remove_temp_files, write_text_atomic


def test_success_writes_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text_atomic(target, "hello\r\nworld\n")
    with atomic_path(tmp_path / "data.bin", suffix=".bin", durable=True) as temp:
        assert temp.parent == tmp_path and temp.name.endswith(".bin") and TEMP_MARKER in temp.name
        temp.write_bytes(b"\x00\x01")
    assert target.read_bytes() == b"hello\r\nworld\n"
    assert (tmp_path / "data.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data.bin", "out.txt", "sub"]


def test_exception_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target, "w", durable=True) as file:
            file.write("new, half written")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_remove_temp_files_removes_only_marker_files(tmp_path):
    for name in (".last.ckpt.tmp-abc", ".a.npz.tmp-x1.png", "a.npz", ".hidden", "tmp-file.txt"):
        (tmp_path / name).write_text("x")
    removed = remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".a.npz.tmp-x1.png", ".last.ckpt.tmp-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "a.npz", "tmp-file.txt"]
