"""mididdsp.parallel: items on forked copies of the process, each computed once, errors and deaths handled."""
from __future__ import annotations

import os
import signal
import time

import pytest

from mididdsp.parallel import can_fork, in_processes

pytestmark = pytest.mark.skipif(not can_fork(), reason="fork from a process with no other thread (Linux)")
PARENT = os.getpid()


def square(index: int):
    return index * index, os.getpid()


def children() -> set[int]:
    """This process's children, zombies included (from /proc: Linux, as fork here)."""
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


def test_every_item_is_computed_once_by_some_process():
    before = children()
    items = [(index,) for index in range(40)]
    results = list(in_processes(square, items, costs=[float(i % 7) for i in range(40)], processes=3))
    assert sorted(index for index, _ in results) == list(range(40))  # each once
    assert all(value == (index * index, value[1]) for index, value in results)
    assert children() == before


def waits_for_a_copy(index: int, marker: str):
    """In a copy: leave a mark. Here: wait for a copy's mark, so that a copy surely computes some item."""
    if os.getpid() != PARENT:
        open(marker, "w").close()
    else:
        deadline = time.monotonic() + 60
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
    return index * index, os.getpid()


def test_the_copies_compute_items_and_send_them_back(tmp_path):
    marker = str(tmp_path / "a copy ran")
    results = dict(in_processes(waits_for_a_copy, [(index, marker) for index in range(6)], processes=2))
    assert sorted(results) == list(range(6)) and all(results[i][0] == i * i for i in range(6))
    assert os.path.exists(marker) and {pid for _, pid in results.values()} - {PARENT}  # one came from a copy


def fails_on_five(index: int):
    if index == 5:
        raise ValueError(f"item {index} is bad")
    return index


def test_an_error_is_raised_in_the_caller_whichever_process_met_it():
    before = children()
    with pytest.raises(ValueError, match="item 5 is bad"):
        list(in_processes(fails_on_five, [(index,) for index in range(12)], processes=2))
    assert children() == before  # the copy was stopped and reaped


def dies_in_a_copy(index: int):
    if os.getpid() != PARENT and index % 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a copy killed (out of memory) while it computes
    return index, os.getpid()


def test_the_items_of_a_copy_that_died_are_computed_by_the_caller():
    before = children()
    results = dict(in_processes(dies_in_a_copy, [(index,) for index in range(10)], processes=2))
    assert sorted(results) == list(range(10))
    assert all(results[index] == (index, PARENT) for index in range(1, 10, 2))  # odd ones: never in a copy
    assert children() == before


def test_one_process_or_one_item_runs_here():
    assert list(in_processes(square, [(3,)], processes=4)) == [(0, (9, PARENT))]
    assert [value for _, value in in_processes(square, [(1,), (2,)], processes=1)] == [(1, PARENT), (4, PARENT)]
