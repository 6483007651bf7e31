"""A render's voices (and reverb buses) on every core, with the same bits as one after another.

Each item (a voice, a bus) is computed on one thread (numpy's BLAS held to one, :func:`one_thread`), so its bits
do not depend on where it runs:
:func:`in_threads` runs the items on threads of this process (the editor, any caller), :func:`in_processes` on
copies of this process made by ``fork`` (``mididdsp render``, Linux). Threads share one interpreter: the Python
between the networks' ops holds its lock and page faults serialise on the process's memory map, so two voice
threads on two cores ran 1.5x one (test04.mid); two forked processes ran 1.9x.
"""
from __future__ import annotations

import contextlib
import functools
import os
import pickle
import signal
import struct
import sys
import threading
from typing import Callable, Iterable, Iterator


_THREADS: int | None = None   # set_threads()'s count; None: the default


def threads() -> int:
    """How many threads (or forked processes) a render may use: :func:`set_threads`'s count, else
    ``OMP_NUM_THREADS`` where set (as torch reads it), else the cores this process may run on."""
    if _THREADS is not None:
        return _THREADS
    with contextlib.suppress(ValueError):
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(count: int | None) -> int | None:
    """Let renders in this process use ``count`` threads (None: the default of :func:`threads`); returns the
    setting it replaces (to give back). A batch worker is one core: it sets 1."""
    global _THREADS
    previous, _THREADS = _THREADS, None if count is None else max(1, int(count))
    return previous


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Hold numpy's BLAS (and torch, where this process has imported it) to one thread while rendering. A GEMM
    may round differently with its number of threads (measured with torch's: 1 vs 2 threads changed about 1 % of
    the 16-bit samples by one step), and a render must be the same bits on one thread (a batch worker) as on
    several (``mididdsp render``, whose voices run side by side, each on one). threadpoolctl sets OpenBLAS's count
    for the process and gives the old one back after; torch's OpenMP and MKL counts are per thread, so torch's is
    set in the calling thread."""
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else 1
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with _blas().limit(limits=1, user_api="blas"):
            yield
    finally:
        if torch is not None and previous != 1:
            torch.set_num_threads(previous)


@functools.lru_cache(maxsize=1)
def _blas():
    """threadpoolctl's view of the render's BLAS libraries (found once: 3 ms; a limit then costs 7 us). numpy and
    scipy each bundle an OpenBLAS of their own, and the generator's layers run on scipy's (``sgemm``): it is loaded
    first, or the view would miss it and leave it on every core (two batch workers, each with two BLAS threads
    spinning, took twice the time of one worker)."""
    from threadpoolctl import ThreadpoolController

    from mididdsp.scipy_kernels import sgemm

    sgemm()  # loads scipy's OpenBLAS, so that the controller sees it
    return ThreadpoolController()


def in_threads(function: Callable, items: list, costs: list[float] | None = None) -> Iterator:
    """``function(*item)`` of each item, in order, on :func:`threads` threads, each on one BLAS thread. The compiled
    kernels (``nogil``), numpy's BLAS and scipy's FFT release the GIL.
    ``costs``: an estimate of each item's work; the costliest start first, so that no thread is left with a long
    item when the others are done (results still come in the items' order)."""
    count = min(threads(), len(items))
    if count <= 1:
        with one_thread():
            for item in items:
                yield function(*item)
        return
    from concurrent.futures import ThreadPoolExecutor

    torch = sys.modules.get("torch")  # a caller's torch (its counts are per thread): one in each pool thread too
    with one_thread(), ThreadPoolExecutor(count, thread_name_prefix="mididdsp-voice",
                                          initializer=torch.set_num_threads if torch else None,
                                          initargs=(1,) if torch else ()) as pool:
        submitted = {index: pool.submit(function, *items[index]) for index in _costliest_first(items, costs)}
        futures = [submitted[index] for index in range(len(items))]
        try:
            for future in futures:
                yield future.result()
        finally:  # an error (or the caller stopping): the items not started yet are not computed
            for future in futures:
                future.cancel()


def ordered_map(function: Callable, items: Iterable, pool, ahead: int) -> Iterator:
    """``function(item)`` of each item, in order, computed on ``pool`` (a ``concurrent.futures`` executor) at most
    ``ahead`` items ahead of the caller: unlike ``Executor.map``, which submits every item at once, the results
    waiting to be read (a reverb block each, half a megabyte) stay bounded."""
    from collections import deque

    items = iter(items)
    waiting: deque = deque(pool.submit(function, item) for _, item in zip(range(ahead), items))
    try:
        while waiting:
            result = waiting.popleft().result()
            for item in items:  # one item in for each result out
                waiting.append(pool.submit(function, item))
                break
            yield result
    finally:  # an error (or the caller stopping): the items not started yet are not computed
        for future in waiting:
            future.cancel()


def can_fork() -> bool:
    """Whether :func:`in_processes` may fork here: on Linux (elsewhere ``fork`` is missing, or unsafe with the
    system's libraries), from the main thread of a process with no other thread (which could hold a lock the copy
    then waits on for ever) but tqdm's monitor (it only sleeps and reads its own bars, which a copy never uses)."""
    if not (sys.platform.startswith("linux") and hasattr(os, "fork")):
        return False
    current = threading.current_thread()
    return current is threading.main_thread() and all(
        thread is current or type(thread).__name__ == "TMonitor" for thread in threading.enumerate())


def in_processes(function: Callable, items: list, costs: list[float] | None = None,
                 processes: int = 2) -> Iterator[tuple[int, object]]:
    """``(index, function(*items[index]))`` for every item, in the order they finish, computed by this process
    and ``processes - 1`` forked copies of it, each on one thread. The items are handed out one at a time
    (costliest first) through a pipe that every process reads from, so the copies stay busy to the end; a copy
    sends each result back pickled. The caller's process is one of the workers: the copies inherit the loaded
    model and need no start-up.

    Where :func:`can_fork` says no, the items run on threads (:func:`in_threads`). The copies run ``function``
    and leave with ``os._exit``, without the interpreter's teardown. A copy's error is raised here; a copy that
    dies leaves its items to this process."""
    order = list(_costliest_first(items, costs))
    processes = min(processes, len(items))
    if processes <= 1 or not can_fork() or 4 * len(items) > 65536:  # the job list must fit in the pipe's buffer
        yield from enumerate(in_threads(function, items, costs))
        return
    jobs_read, jobs_write = os.pipe()
    os.write(jobs_write, b"".join(struct.pack("<i", index) for index in order))
    os.close(jobs_write)  # every process reads indices until the pipe is empty: end of file, no more work
    sys.stdout.flush()
    sys.stderr.flush()
    children: list[tuple[int, _Results]] = []
    reaped: set[int] = set()
    parent = os.getpid()
    try:
        for _ in range(processes - 1):
            results_read, results_write = os.pipe()
            _widen(results_write)
            pid = os.fork()
            if pid == 0:  # the copy: never returns
                os.close(results_read)
                _child(function, items, jobs_read, results_write, parent)
            os.close(results_write)
            children.append((pid, _Results(results_read)))
        done = set()
        with one_thread():
            while True:
                index = _next_job(jobs_read)
                if index is None:
                    break
                result = function(*items[index])
                done.add(index)
                yield index, result
                for index, result in _arrived(children):
                    done.add(index)
                    yield index, result
        for pid, results in children:
            results.join()
            os.waitpid(pid, 0)
            reaped.add(pid)
        for index, result in _arrived(children):
            done.add(index)
            yield index, result
        missing = [index for index in range(len(items)) if index not in done]  # a copy died (killed, out of memory)
        with one_thread():
            for index in missing:
                yield index, function(*items[index])
    finally:
        os.close(jobs_read)
        for pid, results in children:  # an error here or in a copy, or the caller stopped: the copies stop too
            if pid not in reaped:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                results.join()


def _costliest_first(items: list, costs: list[float] | None) -> list[int]:
    return sorted(range(len(items)), key=lambda index: -costs[index]) if costs else list(range(len(items)))


F_SETPIPE_SZ = 1031  # fcntl.h (Linux)


def _widen(fd: int) -> None:
    """Give a results pipe 1 MB of buffer (Linux's default limit for a user) instead of 64 kB: a voice's audio (38
    MB for 10 minutes) then crosses in 40 writes, not 600, each of which woke the reading thread."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)


def _next_job(jobs_read: int) -> int | None:
    data = os.read(jobs_read, 4)  # reads of 4 bytes from a pipe are atomic: each index goes to one process
    return struct.unpack("<i", data)[0] if len(data) == 4 else None


def _child(function: Callable, items: list, jobs_read: int, results_write: int, parent: int) -> None:
    """The forked copy: compute the items it takes from the job pipe, send each result, leave."""
    status = 0
    try:
        _die_with(parent)
        with one_thread(), os.fdopen(results_write, "wb") as out:
            while (index := _next_job(jobs_read)) is not None:
                try:
                    result = ("ok", function(*items[index]))
                except Exception as error:  # noqa: BLE001 - raised again in the parent, by name and message
                    result = ("error", _picklable(error))
                data = pickle.dumps((index, result), protocol=pickle.HIGHEST_PROTOCOL)
                out.write(struct.pack("<q", len(data)))
                out.write(data)
                out.flush()
                if result[0] == "error":
                    break
    except BaseException:  # noqa: BLE001 - Ctrl-C or a broken pipe: the parent recomputes or reports
        status = 1
    finally:
        os._exit(status)  # no atexit, no flushing of the parent's buffers, no teardown of its threads


def _die_with(parent: int) -> None:
    """Have the kernel kill this copy when the process that forked it ends (killed, or Ctrl-C'ed alone), rather
    than leave it computing voices nobody will read."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request was made
        os._exit(1)


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        from mididdsp.errors import MididdspError

        return MididdspError(f"{type(error).__name__}: {error}")


class _Results:
    """A copy's results, read from its pipe by a thread (the copy would block on a full pipe while this process
    computes its own items), kept as pickled bytes until :func:`_arrived` takes them."""

    def __init__(self, fd: int):
        self.fd, self.messages = fd, []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name="mididdsp-results", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with os.fdopen(self.fd, "rb") as source:
            while len(header := source.read(8)) == 8:
                data = source.read(struct.unpack("<q", header)[0])
                with self.lock:
                    self.messages.append(data)

    def take(self) -> list[bytes]:
        with self.lock:
            messages, self.messages = self.messages, []
        return messages

    def join(self) -> None:
        self.thread.join()


def _arrived(children: list) -> Iterator[tuple[int, object]]:
    for _, results in children:
        for data in results.take():
            try:
                index, (kind, value) = pickle.loads(data)
            except Exception:  # noqa: BLE001 - a copy killed mid-message: its items are recomputed here
                continue
            if kind == "error":
                raise value
            yield index, value
