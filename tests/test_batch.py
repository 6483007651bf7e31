"""`mididdsp render` of many files (mididdsp.batch, local engine): every output has the bits of the single-file render
of the same file and options, bad files are `failed` rows and the batch goes on, a run killed with SIGKILL and run
again equals an uninterrupted run, a worker process killed mid-task is replaced, and the report says it all."""
from __future__ import annotations

import csv
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

import mididdsp
from mididdsp.batch import REPORT_COLUMNS, REPORT_NAME, find_inputs
from mididdsp.cli import main
from mididdsp.errors import MididdspError
from mididdsp.render import PRETRAINED_MIDI

pytestmark = pytest.mark.skipif(not (PRETRAINED_MIDI / "generator").is_dir(),
                                reason=f"no shipped MIDI model at {PRETRAINED_MIDI} (make model-midi)")


def write_song(path: Path, seed: int, programs: tuple[int, ...] = (40,), seconds: float = 1.5) -> Path:
    """A short pretty_midi file: one random melody per program (the lower programs an octave down)."""
    rng = np.random.default_rng(seed)
    song = pretty_midi.PrettyMIDI()
    for program in programs:
        part = pretty_midi.Instrument(program=program)
        start = 0.1
        while start < seconds:
            length = float(rng.uniform(0.15, 0.45))
            pitch = int(rng.integers(62, 79)) - (12 if program in (42, 43, 70) else 0)
            part.notes.append(pretty_midi.Note(int(rng.integers(50, 110)), pitch, start, start + length))
            start += length + float(rng.uniform(0.0, 0.1))
        song.instruments.append(part)
    path.parent.mkdir(parents=True, exist_ok=True)
    song.write(str(path))
    return path


def write_bad_files(folder: Path) -> dict[str, str]:
    """Corrupt, empty, drums-only and absurd-tempo files; name -> a word their report row's reason must hold."""
    import mido

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (folder / "empty.mid").write_bytes(b"")
    drums = pretty_midi.PrettyMIDI()
    kit = pretty_midi.Instrument(program=0, is_drum=True)
    kit.notes.append(pretty_midi.Note(100, 36, 0.0, 0.2))
    drums.instruments.append(kit)
    drums.write(str(folder / "drums.mid"))
    slow = mido.MidiFile(type=0, ticks_per_beat=1)  # 3.75 bpm, one tick per beat: the note starts after 2.2 h
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=16_000_000, time=0)])
    track += [mido.Message("note_on", note=60, velocity=80, time=500), mido.Message("note_off", note=60, time=1)]
    slow.tracks.append(track)
    slow.save(folder / "slow.mid")
    return {"corrupt.mid": "not a readable MIDI file", "empty.mid": "MIDI", "drums.mid": "no melodic notes",
            "slow.mid": "minutes"}


def read_rows(out_dir: Path) -> dict[str, dict]:
    with open(out_dir / REPORT_NAME, newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == REPORT_COLUMNS
        return {Path(row["input"]).name: row for row in reader}


def single_render(midi: Path, out: Path, *options: str) -> bytes:
    """The oracle: `mididdsp render FILE -o OUT` with the same options."""
    assert main(["render", str(midi), "-o", str(out), "--quiet", *options]) == 0
    return out.read_bytes()


def test_a_folder_renders_every_file_with_the_bits_of_its_single_render(tmp_path, capsys):
    songs = tmp_path / "songs"
    write_song(songs / "a.mid", 1, (40,))
    write_song(songs / "strings" / "b.mid", 2, (40, 42))
    write_song(songs / "winds" / "c.midi", 3, (73,), seconds=2.5)
    options = ["--seed", "3", "--temperature", "0.7", "--transpose", "2", "--tempo-scale", "1.1"]
    out = tmp_path / "out"
    status = main(["render", str(songs), "-o", str(out), "--workers", "2", "--format", "flac", "--quiet",
                   "--stems", str(tmp_path / "stems"), "--expression-out", str(tmp_path / "tables"), *options])
    assert status == 0, capsys.readouterr().err
    expected = {"a": "0=violin", "strings/b": "0=violin;1=cello", "winds/c": "0=flute"}
    rows = read_rows(out)
    for relative, instruments in expected.items():
        midi = next(songs.glob(f"{relative}.mid*"))
        alone = tmp_path / "alone" / f"{relative}.flac"
        alone.parent.mkdir(parents=True, exist_ok=True)
        table = alone.with_suffix(".csv")
        assert (out / f"{relative}.flac").read_bytes() == single_render(
            midi, alone, *options, "--stems", str(alone.with_suffix("")), "--expression-out", str(table))
        assert (tmp_path / "tables" / f"{relative}.csv").read_bytes() == table.read_bytes()
        stems = sorted(p.name for p in (tmp_path / "stems" / relative).iterdir())
        assert stems == sorted(p.name for p in alone.with_suffix("").iterdir()) and stems
        for name in stems:
            assert (tmp_path / "stems" / relative / name).read_bytes() == (alone.with_suffix("") / name).read_bytes()
        row = rows[midi.name]
        assert row["status"] == "ok" and row["error"] == "" and row["output"] == str(out / f"{relative}.flac")
        assert row["instruments"] == instruments
        assert float(row["audio_seconds"]) > 1.0 and float(row["work_seconds"]) > 0.0


def test_spawned_workers_render_the_bits_of_workers_forked_warm(tmp_path, monkeypatch):
    """Where the command may fork, its workers are forked from it once it holds the model and has made one short
    render; elsewhere (mididdsp.parallel.can_fork says no) they are spawned and load their own: the same files."""
    from mididdsp import parallel

    songs = tmp_path / "songs"
    for index in range(3):
        write_song(songs / f"s{index}.mid", index, (40, 73))
    mididdsp.render_many([songs], tmp_path / "forked", workers=2, seed=1, progress=False)
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    mididdsp.render_many([songs], tmp_path / "spawned", workers=2, seed=1, progress=False)
    forked = sorted((tmp_path / "forked").glob("*.wav"))
    assert len(forked) == 3
    assert all(path.read_bytes() == (tmp_path / "spawned" / path.name).read_bytes() for path in forked)


def test_bad_files_are_failed_rows_with_a_reason_and_the_batch_goes_on(tmp_path, capsys):
    songs = tmp_path / "songs"
    write_song(songs / "good.mid", 4)
    reasons = write_bad_files(songs / "bad")
    out = tmp_path / "out"
    status = main(["render", str(songs), "-o", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    rows = read_rows(out)
    assert rows["good.mid"]["status"] == "ok" and (out / "good.wav").is_file()
    for name, word in reasons.items():
        row = rows[name]
        assert row["status"] == "failed" and word in row["error"] and name in row["error"], row
        assert "\n" not in row["error"] and not (out / "bad" / name).with_suffix(".wav").exists()
        assert f"failed: {row['error']}" in err  # one line each, beside the progress bar
    assert "1 rendered, 0 skipped (done before), 4 failed" in err
    # a re-run skips what is done and tries the failed ones again (they fail again: exit 1, never a loop)
    assert main(["render", str(songs), "-o", str(out), "--workers", "1", "--quiet"]) == 1
    rerun = read_rows(out)
    assert rerun["good.mid"]["status"] == "skipped" and rerun["corrupt.mid"]["status"] == "failed"
    assert rerun["good.mid"]["audio_seconds"] == rows["good.mid"]["audio_seconds"]  # kept from the run that made it
    assert rerun["good.mid"]["instruments"] == "0=violin"
    before = (out / "good.wav").stat().st_mtime_ns
    assert main(["render", str(songs / "good.mid"), str(songs / "bad" / "drums.mid"), "-o", str(out),
                 "--overwrite", "--quiet"]) == 1
    again = read_rows(out)
    assert again["good.mid"]["status"] == "ok" and (out / "good.wav").stat().st_mtime_ns != before
    assert set(again) == {"good.mid", "drums.mid"}


def test_a_run_killed_with_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    songs = tmp_path / "songs"
    for index in range(6):
        write_song(songs / f"song{index}.mid", 10 + index, (40, 73) if index % 2 else (71,), seconds=2.0)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # the killed run's temporary folders and the re-run's in one place: the killed run's scratch folder is left
    # (nothing can remove it at kill -9), and the next batch removes it
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    env = {**os.environ, "TMPDIR": str(system_temp),
           "PYTHONPATH": os.pathsep.join([str(Path(mididdsp.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "mididdsp", "render", str(songs), "-o", str(killed),
                                "--workers", "1", "--quiet"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(killed.glob("*.wav")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = sorted(p.name for p in killed.glob("*.wav"))
    assert 0 < len(finished_before), process.stderr.read().decode()
    assert [p.name.startswith("mididdsp-batch-") for p in system_temp.iterdir()] == [True]
    assert main(["render", str(songs), "-o", str(killed), "--workers", "1", "--quiet"]) == 0
    assert list(system_temp.iterdir()) == []
    assert main(["render", str(songs), "-o", str(whole), "--workers", "1", "--quiet"]) == 0
    names = sorted(p.name for p in whole.iterdir())
    assert sorted(p.name for p in killed.iterdir()) == names  # no temporary file left behind
    for name in names:
        if name != REPORT_NAME:
            assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    rows = read_rows(killed)
    assert {Path(name).stem for name, row in rows.items() if row["status"] == "skipped"} == {
        Path(name).stem for name in finished_before}
    assert all(row["status"] in ("ok", "skipped") for row in rows.values()) and len(rows) == 6


def test_ctrl_c_stops_the_batch_quietly_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    """Ctrl-C (SIGINT to the terminal's whole process group: the driver and its workers) ends the batch with exit
    130 and one line, "interrupted": no worker's traceback, no worker left running, no scratch folder left; the
    report holds the files finished so far, and a re-run skips them and renders the rest."""
    from mididdsp import batch

    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    songs = tmp_path / "songs"
    for index in range(40):
        write_song(songs / f"s{index:02d}.mid", 50 + index, (40,), seconds=3.0)
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(system_temp),
           "PYTHONPATH": os.pathsep.join([str(Path(mididdsp.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "mididdsp", "render", str(songs), "-o", str(out),
                                "--workers", "2"], env=env, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120  # until a file is done and reported: the workers are rendering
    while not batch.read_report(out / REPORT_NAME) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    err = process.communicate(timeout=60)[1].decode()
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == "interrupted", err
    deadline = time.monotonic() + 10  # the group empties: the driver, its workers and helpers have left
    while time.monotonic() < deadline:  # (an exited child of the driver stays a zombie until init reaps it)
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"processes of the interrupted batch still run: {err}")
    assert list(system_temp.iterdir()) == []
    done = {name for name, row in read_rows(out).items() if row["status"] == "ok"}
    written = {p.with_suffix(".mid").name for p in out.glob("*.wav")}
    # a file is written before its report row: the interrupt may fall between the two (the file is whole)
    assert done and done <= written and len(written - done) <= 1 and len(written) < 40
    assert main(["render", str(songs), "-o", str(out), "--workers", "1", "--quiet"]) == 0
    rows = read_rows(out)
    assert {name for name, row in rows.items() if row["status"] == "skipped"} == written and len(rows) == 40


def test_a_worker_process_killed_mid_task_is_replaced_and_the_batch_completes(tmp_path, monkeypatch):
    # this process's temporary folders (the batch's scratch folder among them) in one place, to check that the
    # killed worker's leftovers go with the batch
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    monkeypatch.setenv("TMPDIR", str(system_temp))  # and the workers' (spawned: they read it afresh)
    songs = tmp_path / "songs"
    for index in range(6):
        write_song(songs / f"s{index}.mid", 30 + index, (40,), seconds=2.5)
    out = tmp_path / "out"
    rows: list = []
    batch = threading.Thread(target=lambda: rows.extend(mididdsp.render_many([songs], out, workers=2)))
    batch.start()
    victims = []
    deadline = time.monotonic() + 120
    while not victims and batch.is_alive() and time.monotonic() < deadline:
        if list(out.glob("*.wav")):  # the workers have loaded the model and are rendering
            victims = multiprocessing.active_children()[:1]
            for victim in victims:
                os.kill(victim.pid, signal.SIGKILL)
        time.sleep(0.01)
    # generous: in a fresh clone every new worker compiles the numba kernels first (about 7 s a process on an idle
    # machine, several times that on a loaded one), and the replacement pool pays it again
    batch.join(600)
    assert victims, "no worker process was found to kill"
    assert not batch.is_alive(), "the batch did not finish within 10 minutes of the kill"
    assert [row["status"] for row in rows] == ["ok"] * 6
    assert list(system_temp.iterdir()) == []
    for index in range(6):
        alone = single_render(songs / f"s{index}.mid", tmp_path / "alone" / f"s{index}.wav")
        assert (out / f"s{index}.wav").read_bytes() == alone


def test_the_render_has_the_same_bits_on_one_thread_as_on_two(tmp_path):
    """What lets a batch worker (one thread, one voice at a time) match `mididdsp render` (its voices and buses on
    threads, one per core): a GEMM may round differently with its thread count, so every matrix product runs on
    one BLAS thread, and the reverb convolves in scipy. Three voices, so two threads share them (forked copies:
    tests/test_parallel.py). And while a render computes, every BLAS library loaded (numpy's and scipy's each
    bundle one; the generator's layers run on scipy's) is held to one thread: left at two, two batch workers'
    spinning BLAS threads doubled a batch's time."""
    from threadpoolctl import threadpool_info

    from mididdsp import parallel

    model = mididdsp.load_model()
    score = mididdsp.read_midi(write_song(tmp_path / "trio.mid", 7, (40, 42, 71), seconds=3.0))
    audio = []
    seen: list = []
    generator_spans = model.generator.spans

    def spans(*args, **kwargs):  # the BLAS libraries' thread counts, read while a voice is computed
        seen.append({info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})
        return generator_spans(*args, **kwargs)

    model.generator.spans = spans
    previous = parallel.set_threads(None)
    try:
        for count in (1, 2):
            parallel.set_threads(count)
            audio.append(model.render(score, seed=5, stems=False).audio)
    finally:
        parallel.set_threads(previous)
    assert np.array_equal(audio[0], audio[1])
    assert seen and all(len(counts) >= 2 and set(counts.values()) == {1} for counts in seen), seen


def test_work_list_relative_paths_and_refusals(tmp_path, capsys):
    songs = tmp_path / "songs"
    write_song(songs / "x" / "a.mid", 1)
    write_song(songs / "b.MIDI", 2)
    (songs / "notes.txt").write_text("not a MIDI file")
    assert [(Path(j.input).name, j.relative) for j in find_inputs([songs])] == [("b.MIDI", "b"), ("a.mid", "x/a")]
    with pytest.raises(MididdspError, match="would both write"):
        find_inputs([songs / "x" / "a.mid", songs / "x"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MididdspError, match="no .mid or .midi"):
        find_inputs([tmp_path / "empty"])
    cases = [
        (["--expression-in", str(tmp_path / "t.csv")], "--expression-in plays one table into one MIDI file"),
        (["--instrument", "kazoo"], "violin"),
        (["--address", "auto"], "--engine ray"),
        (["--workers", "0"], "--workers 0"),
        (["--expression-out", str(tmp_path / "t.csv")], "expected a folder"),
    ]
    for extra, words in cases:
        status = main(["render", str(songs), "-o", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line]
        assert status == 1 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], err
    assert not (tmp_path / "o" / "b.wav").exists()
    # several inputs into what reads as an audio file: refused, no folder of that name made
    status = main(["render", str(songs / "b.MIDI"), str(songs / "x" / "a.mid"), "-o", str(tmp_path / "both.wav")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("error: -o ") and "names a folder, not an audio file" in err, err
    assert not (tmp_path / "both.wav").exists()
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    assert "Exit status: 0 when every input is ok or skipped, 1 when any failed" in " ".join(
        capsys.readouterr().out.split())


def test_the_local_engine_never_imports_ray(tmp_path):
    midi = write_song(tmp_path / "songs" / "a.mid", 1, seconds=0.8)
    code = ("import sys, mididdsp\n"
            f"rows = mididdsp.render_many([{str(midi.parent)!r}], {str(tmp_path / 'out')!r}, workers=1)\n"
            "assert rows[0]['status'] == 'ok', rows\n"
            "assert 'ray' not in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(mididdsp.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_stale_scratch_folders_of_dead_batches_on_this_host_are_removed(tmp_path, monkeypatch):
    from mididdsp import batch_engines as engines

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(ended.stdout)
    host = engines._scratch_tag(0)[len(engines.SCRATCH_PREFIX):-3]  # this host's name
    folders = {"dead": tmp_path / f"{engines.SCRATCH_PREFIX}{host}.{dead}.abc_1",
               "alive": tmp_path / f"{engines.SCRATCH_PREFIX}{host}.{os.getpid()}.abc_2",
               "other host": tmp_path / f"{engines.SCRATCH_PREFIX}not-{host}.{dead}.abc_3"}
    for folder in folders.values():
        (folder / "mididdsp-job").mkdir(parents=True)
    assert engines.remove_stale_scratch() == [folders["dead"]]
    assert not folders["dead"].exists() and folders["alive"].exists() and folders["other host"].exists()


def test_largest_files_are_dealt_first_and_the_report_keeps_input_order(tmp_path, monkeypatch):
    """The workers get the largest files first (a long file dealt last would leave the others idle at the end);
    the report still lists the inputs in their order. The work itself is replaced: this pins the dealing."""
    from mididdsp import batch, batch_engines

    folder = tmp_path / "songs"
    sizes = {"a": 1.0, "b": 12.0, "c": 4.0, "d": 30.0}
    for name, seconds in sizes.items():
        write_song(folder / f"{name}.mid", 1, seconds=seconds)
    dealt = []
    monkeypatch.setattr(batch_engines, "_start_worker", lambda model_dir: None)
    monkeypatch.setattr(batch_engines, "_worker_render",
                        lambda job, data, settings: dealt.append(Path(job.input).stem) or batch.Outcome("failed",
                                                                                                      error="stub"))
    rows = mididdsp.render_many([folder], tmp_path / "out", workers=1)
    assert dealt == ["d", "b", "c", "a"]
    assert [Path(row["input"]).stem for row in rows] == ["a", "b", "c", "d"]
    with open(tmp_path / "out" / REPORT_NAME, newline="") as report:
        assert [Path(row["input"]).stem for row in csv.DictReader(report)] == ["a", "b", "c", "d"]


def test_default_workers_follow_the_cores_allowed_and_too_many_are_warned(tmp_path, monkeypatch):
    """The default is the cores this process may run on (its affinity, as taskset sets it), and more workers than
    those is a warning (each holds a model): the engine itself is replaced, this pins what it is asked for."""
    from mididdsp import batch, batch_engines

    folder = tmp_path / "songs"
    for index in range(4):
        write_song(folder / f"s{index}.mid", index)
    asked = []

    def engine(jobs, settings, workers):
        asked.append(workers)
        for job in jobs:
            yield job, batch.Outcome("failed", error="stub")

    monkeypatch.setattr(batch_engines, "local_engine", engine)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mididdsp.render_many([folder], tmp_path / "a")  # the default: three cores allowed, three workers
        mididdsp.render_many([folder], tmp_path / "b", workers=3)
    with pytest.warns(UserWarning, match="--workers 8 on 3 cores"):
        mididdsp.render_many([folder], tmp_path / "c", workers=8)
    assert asked == [3, 3, 4]  # never more workers than files
