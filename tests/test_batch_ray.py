"""`mididdsp render --engine ray` on a local Ray instance started by the test (2 CPUs): the same outputs, report and
resume as the local engine, and a Ray worker process killed mid-task is restarted and its file retried."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import mididdsp
from mididdsp.cli import main
from mididdsp.render import PRETRAINED_MIDI

from test_batch import read_rows, single_render, write_bad_files, write_song

ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")  # CI installs .[test] (Ray)
pytestmark = pytest.mark.skipif(not (PRETRAINED_MIDI / "generator").is_dir(),
                                reason=f"no shipped MIDI model at {PRETRAINED_MIDI} (make model-midi)")


@pytest.fixture(scope="module")
def local_ray():
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield context
    ray.shutdown()


def actor_processes_rendering() -> list[int]:
    """Pids of Ray worker processes inside RenderActor.render (Ray names a worker's process after its task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::RenderActor.render"):
                pids.append(int(entry.name))
    return pids


def scratch_folders() -> list[Path]:
    """The temporary folders of ours on this host: batches' scratch folders and any per-file folder outside them."""
    import tempfile

    return list(Path(tempfile.gettempdir()).glob("mididdsp-*"))


def per_file_folders() -> list[Path]:
    """A file's temporary folder: inside a scratch folder, or (code before the scratch folders) directly in tmp."""
    return [path for folder in scratch_folders()
            for path in (folder.glob("mididdsp-*") if folder.name.startswith("mididdsp-batch-") else [folder])]


def test_ray_batch_with_a_killed_worker_bad_files_and_a_rerun(local_ray, tmp_path):
    songs = tmp_path / "songs"
    for index in range(5):
        write_song(songs / "good" / f"g{index}.mid", 50 + index, (40, 42) if index % 2 else (73,), seconds=2.5)
    reasons = write_bad_files(songs / "bad")
    out = tmp_path / "out"
    scratch_before = set(scratch_folders())
    rows: list = []
    batch = threading.Thread(target=lambda: rows.extend(mididdsp.render_many([songs], out, engine="ray")))
    batch.start()
    killed = []
    deadline = time.monotonic() + 180
    while not killed and batch.is_alive() and time.monotonic() < deadline:
        if not per_file_folders():  # kill mid-file, once a worker's temporary folder for a file exists
            time.sleep(0.005)
            continue
        for pid in actor_processes_rendering()[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.005)
    batch.join(300)
    assert killed, "no Ray worker was caught rendering"
    # the killed actor's scratch folder went with its restart, the others' with the batch's end
    assert set(scratch_folders()) <= scratch_before
    status = {Path(row["input"]).name: row for row in rows}
    for index in range(5):
        row = status[f"g{index}.mid"]
        assert row["status"] == "ok", row
        alone = single_render(songs / "good" / f"g{index}.mid", tmp_path / "alone" / f"g{index}.wav")
        assert (out / "good" / f"g{index}.wav").read_bytes() == alone
    for name, word in reasons.items():
        assert status[name]["status"] == "failed" and word in status[name]["error"], status[name]
    assert read_rows(out) == {name: {k: str(v) if not isinstance(v, float) else f"{v:.3f}" for k, v in row.items()}
                              for name, row in status.items()}
    # the command on the same instance: what is done is skipped, the bad files fail again (exit 1)
    assert main(["render", str(songs), "-o", str(out), "--engine", "ray", "--quiet"]) == 1
    rerun = read_rows(out)
    assert {name for name, row in rerun.items() if row["status"] == "skipped"} == {f"g{i}.mid" for i in range(5)}
    assert {name for name, row in rerun.items() if row["status"] == "failed"} == set(reasons)
