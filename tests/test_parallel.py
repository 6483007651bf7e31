"""mididdsp.parallel: items on forked copies of the process, each computed once, errors and deaths handled, and a
render with the same bits as on threads.

Each check runs in a fresh interpreter (this file run as a script): ``in_processes`` forks only from a process
with no other thread, and the test session's own process has some (servers, Ray clients) by the time it gets here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux")
PARENT = os.getpid()


def isolated(name: str, *arguments: str) -> None:
    """Run ``check_<name>`` of this file in a new interpreter; its assertion message is the failure's."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, name, *arguments], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def children() -> set[int]:
    """This process's children, zombies included (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.add(int(entry))
    return found


# ------------------------------------------------------------------------------------------------ the checks
def square(index: int):
    return index * index, os.getpid()


def check_every_item_once() -> None:
    from mididdsp.parallel import can_fork, in_processes

    assert can_fork()
    results = list(in_processes(square, [(index,) for index in range(40)], costs=[float(i % 7) for i in range(40)],
                                processes=3))
    assert sorted(index for index, _ in results) == list(range(40))  # each once
    assert all(value == (index * index, value[1]) for index, value in results)
    assert not children()


def waits_for_a_copy(index: int, marker: str):
    """In a copy: leave a mark. Here: wait for a copy's mark, so that a copy surely computes some item."""
    if os.getpid() != PARENT:
        open(marker, "w").close()
    else:
        deadline = time.monotonic() + 60
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
    return index * index, os.getpid()


def check_copies_send_results(marker: str) -> None:
    from mididdsp.parallel import in_processes

    results = dict(in_processes(waits_for_a_copy, [(index, marker) for index in range(6)], processes=2))
    assert sorted(results) == list(range(6)) and all(results[i][0] == i * i for i in range(6))
    assert os.path.exists(marker) and {pid for _, pid in results.values()} - {PARENT}  # one came from a copy


def fails_on_five(index: int):
    if index == 5:
        raise ValueError(f"item {index} is bad")
    return index


def check_error_raised_here() -> None:
    from mididdsp.parallel import in_processes

    try:
        list(in_processes(fails_on_five, [(index,) for index in range(12)], processes=2))
    except ValueError as error:
        assert str(error) == "item 5 is bad"
    else:
        raise AssertionError("no error")
    assert not children()  # the copy was stopped and reaped


def dies_in_a_copy(index: int):
    if os.getpid() != PARENT and index % 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a copy killed (out of memory) while it computes
    return index, os.getpid()


def check_dead_copy_items_computed_here() -> None:
    from mididdsp.parallel import in_processes

    results = dict(in_processes(dies_in_a_copy, [(index,) for index in range(10)], processes=2))
    assert sorted(results) == list(range(10))
    assert all(results[index] == (index, PARENT) for index in range(1, 10, 2))  # odd ones: never in a copy
    assert not children()


def sleeps_in_a_copy(index: int, folder: str):
    if os.getpid() != PARENT:
        Path(folder, "copy.pid").write_text(str(os.getpid()))
        time.sleep(120)
    else:
        time.sleep(120)  # the process is killed meanwhile
    return index


def check_copy_dies_with_the_process(folder: str) -> None:
    from mididdsp.parallel import in_processes

    list(in_processes(sleeps_in_a_copy, [(index, folder) for index in range(4)], processes=2))


def check_render_same_bits(folder: str) -> None:
    """The trio of tests/test_batch.py: its voices in a forked copy and here, on threads, one after another."""
    import numpy as np

    import mididdsp
    from mididdsp.parallel import can_fork, set_threads
    from tests.test_batch import write_song

    model = mididdsp.load_model()
    score = mididdsp.read_midi(write_song(Path(folder) / "trio.mid", 7, (40, 42, 71), seconds=3.0))
    assert can_fork()
    set_threads(2)
    threads = model.render(score, seed=5, stems=False).audio
    forked = model.render(score, seed=5, stems=False, processes=2).audio
    set_threads(1)
    serial = model.render(score, seed=5, stems=False).audio
    assert np.array_equal(forked, threads) and np.array_equal(forked, serial)


# ------------------------------------------------------------------------------------------------ the tests
def test_every_item_is_computed_once_by_some_process():
    isolated("check_every_item_once")


def test_the_copies_compute_items_and_send_them_back(tmp_path):
    isolated("check_copies_send_results", str(tmp_path / "a copy ran"))


def test_an_error_is_raised_in_the_caller_whichever_process_met_it():
    isolated("check_error_raised_here")


def test_the_items_of_a_copy_that_died_are_computed_by_the_caller():
    isolated("check_dead_copy_items_computed_here")


def test_a_copy_ends_when_the_process_that_forked_it_is_killed(tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, __file__, "check_copy_dies_with_the_process", str(tmp_path)],
                               env=env)
    pid_file = tmp_path / "copy.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    copy = int(pid_file.read_text())
    process.kill()
    process.wait()

    def running() -> bool:
        try:
            with open(f"/proc/{copy}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running()  # not left computing for nobody


def test_a_render_has_the_same_bits_in_forked_copies_as_on_threads(tmp_path):
    from mididdsp.render import PRETRAINED_MIDI

    if not (PRETRAINED_MIDI / "generator").is_dir():
        pytest.skip("no shipped MIDI model")
    isolated("check_render_same_bits", str(tmp_path))


def test_with_other_threads_or_one_process_the_items_run_here():
    import threading

    from mididdsp.parallel import can_fork, in_processes

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not can_fork()  # another thread could hold a lock a copy would wait on
        assert [value for _, value in in_processes(square, [(1,), (2,)], processes=2)] == [(1, PARENT), (4, PARENT)]
    finally:
        stop.set()
        other.join()
    assert list(in_processes(square, [(3,)], processes=4)) == [(0, (9, PARENT))]


def test_ordered_map_keeps_order_and_stays_a_bounded_number_of_items_ahead():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from mididdsp.parallel import ordered_map

    started: list[int] = []
    lock = threading.Lock()

    def slow_square(item: int) -> int:
        with lock:
            started.append(item)
        time.sleep(0.002 * (item % 3))  # finish out of order
        return item * item

    with ThreadPoolExecutor(3) as pool:
        results = ordered_map(slow_square, range(30), pool, ahead=4)
        for read, value in enumerate(results):
            assert value == read * read
            with lock:
                assert len(started) <= read + 1 + 4  # never more than 4 items beyond the one read
        # an error stops the rest: what was not started is never computed
        started.clear()

        def fails_on_two(item: int) -> int:
            started.append(item)
            if item == 2:
                raise ValueError("two")
            return item

        with pytest.raises(ValueError, match="two"):
            list(ordered_map(fails_on_two, range(100), pool, ahead=2))
        assert max(started) < 10


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
