"""The engines of a batch (:mod:`mididdsp.batch`): where its files are rendered. Each yields ``(job, outcome)`` pairs
for the jobs it is given, in the order they finish:

* :func:`local_engine`: worker processes on this machine, a pair of pipes each (or this process for one worker);
  a worker that dies is replaced and its file tried again, up to :data:`~mididdsp.batch.MAX_ATTEMPTS` times.
* :func:`ray_engine`: Ray actors holding the model, on a local instance or a cluster; ``import ray`` happens
  only there.

A worker of either loads the model once (:func:`_start_worker`) and renders file after file on one thread
with :func:`mididdsp.batch.render_job`; its temporary files go under a scratch folder that outlives a killed
worker until the next batch on the host removes it (:func:`remove_stale_scratch`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

from mididdsp.batch import (CLOSE_TIMEOUT_S, IN_FLIGHT_PER_WORKER, MAX_ATTEMPTS, Job, Outcome, Settings, _one_line,
                            available_cores, render_job)
from mididdsp.errors import MididdspError

_WORKER_MODEL = None  # the model a worker process loaded once (local engine)


def _start_worker(model_dir: str | None) -> None:
    """A worker: one thread (the cores are the workers', and the render runs its voices one at a time on it),
    then the model."""
    global _WORKER_MODEL
    from mididdsp.parallel import set_threads
    from mididdsp.render import load_model

    set_threads(1)

    _WORKER_MODEL = load_model(model_dir)


def _worker_render(job: Job, data: bytes | None, settings: Settings) -> Outcome:
    return render_job(_WORKER_MODEL, job, data, settings)


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def local_engine(jobs: list[Job], settings: Settings, workers: int) -> Iterator[tuple[Job, Outcome]]:
    """Render ``jobs`` in ``workers`` processes on this machine (each loads the model once), or in this process
    when ``workers`` is 1. A worker is one core: one thread (threads of several workers, or of a job beside
    them, spinning on the same cores slowed a render tenfold, measured). A process that dies is replaced; see
    :data:`MAX_ATTEMPTS`.

    The workers' temporary folders go under one scratch folder of the batch's, removed when it ends: a worker
    killed mid-file (kill -9, out of memory) cannot remove its own. A batch that is itself killed leaves its
    scratch folder, which the next batch on this machine removes (:func:`remove_stale_scratch`)."""
    import shutil

    remove_stale_scratch()
    scratch = _make_scratch()
    settings = dataclasses.replace(settings, scratch=scratch)
    try:
        yield from (_in_this_process(jobs, settings) if workers <= 1 else _in_workers(jobs, settings, workers))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


SCRATCH_PREFIX = "mididdsp-batch-"


def _scratch_tag(pid: int) -> str:
    """``mididdsp-batch-HOST.PID.``: the start of the name of a scratch folder this host's process ``pid`` made."""
    import socket

    return f"{SCRATCH_PREFIX}{socket.gethostname()}.{pid}."


def _make_scratch() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=_scratch_tag(os.getpid()))


def remove_stale_scratch() -> list[Path]:
    """Remove the scratch folders that batches on this host left when they were killed (their process is gone);
    returns them. A folder of a process that still runs, or of another host sharing the folder, is left alone."""
    import shutil
    import tempfile

    host_tag = _scratch_tag(0)[:-len("0.")]  # this host's folders: the process id follows
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{host_tag}*"):
        pid = folder.name[len(host_tag):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _in_this_process(jobs: list[Job], settings: Settings) -> Iterator[tuple[Job, Outcome]]:
    from mididdsp import parallel

    threads = parallel.set_threads(None)  # what the caller had (the worker sets its own)
    try:
        _start_worker(settings.model)  # this process is the one worker: one core, like each of N workers
        for job in jobs:
            yield job, _worker_render(job, _read(job.input), settings)
    finally:  # the caller's process (render_many from Python) gets its threads back
        parallel.set_threads(threads)


def _in_workers(jobs: list[Job], settings: Settings, workers: int) -> Iterator[tuple[Job, Outcome]]:
    # Each worker has its own pair of pipes, not a pool's shared queues: a worker killed while it sends its result
    # (holding a shared queue's lock, half a message written) once left a ProcessPoolExecutor and the batch waiting
    # forever. Here the dead worker's pipe reads end-of-file, its file goes back on the list, and a new one starts.
    import multiprocessing
    from multiprocessing.connection import wait

    from mididdsp.parallel import can_fork

    global _WORKER_MODEL
    queue = list(reversed(jobs))
    attempts: dict[Job, int] = {}
    # Where this process may fork (Linux, no other thread: mididdsp.parallel.can_fork), it loads the model once and
    # makes one small render (numba's start, the first calls), and the workers are forked from it warm: two
    # workers starting side by side took 1.6 s to their first file against 1.1 s for one (when they imported
    # torch), and each then paid 0.45 s of first calls. Elsewhere they are spawned and start cold.
    inherited = can_fork()
    if inherited:
        from mididdsp import parallel

        threads = parallel.set_threads(None)  # what the caller had (the warm-up sets a worker's)
        _warm_up(settings)
    context = multiprocessing.get_context("fork" if inherited else "spawn")
    idle: list[_Worker] = []
    busy: dict = {}  # the result pipe of a worker -> (the worker, its job)
    try:
        while queue or busy:
            while queue and len(idle) + len(busy) < workers:
                idle.append(_Worker(context, settings.model, inherited))
            while queue and idle:
                worker, job = idle.pop(), queue.pop()
                worker.send((job, _read(job.input), settings))
                busy[worker.results] = (worker, job)
            for results in wait(list(busy)):
                worker, job = busy.pop(results)
                try:
                    outcome = results.recv()
                except (EOFError, OSError):  # the process died (killed, out of memory) before its answer was whole
                    worker.stop()
                    attempts[job] = attempts.get(job, 0) + 1
                    if attempts[job] < MAX_ATTEMPTS:
                        queue.append(job)
                        continue
                    outcome = Outcome("failed", error=f"{job.input}: the worker process died while rendering it, "
                                                      f"{MAX_ATTEMPTS} times")
                else:
                    idle.append(worker)
                yield job, outcome
    finally:  # done, an exception, or the caller stopped early: no process outlives the batch
        remaining = idle + [worker for worker, _ in busy.values()]
        for worker in remaining:  # every worker told first, so that they leave together
            worker.close()
        for worker in remaining:
            worker.stop()
        if inherited:  # the caller's process (render_many from Python) gets its threads back, and no model held
            parallel.set_threads(threads)
            _WORKER_MODEL = None


def _warm_up(settings: Settings) -> None:
    """Load the model in this process and render one short note through a worker's path (the MIDI bytes, the
    prior, the generator, the synthesizer, the reverb, the encoded file), so that what is made on first use is
    made here once, for every worker forked after."""
    import tempfile

    from mididdsp.score import Note, Score, Track

    _start_worker(settings.model)
    path = Path(settings.scratch or tempfile.gettempdir()) / "warm-up.mid"
    Score([Track("warm-up", 40, False, [Note(0.1, 0.4, 67, 80)])], 0.4).write_midi(path)
    try:
        _worker_render(Job(str(path), "warm-up"), path.read_bytes(), settings)
    finally:
        path.unlink(missing_ok=True)


_WORKERS: list = []  # the live workers of this process's batch (a forked worker closes its copies of their pipes)


class _Worker:
    """A worker process of :func:`local_engine` and its two one-way pipes (jobs in, outcomes out). One job at a
    time: the worker reads its next job only after its answer is sent, so neither side can block the other.
    ``inherited``: the process is forked from this one, whose model it uses (else spawned: it loads its own)."""

    def __init__(self, context, model_dir: str | None, inherited: bool = False):
        self.jobs, jobs_end = context.Pipe(duplex=False)[::-1]
        self.results, results_end = context.Pipe(duplex=False)
        _WORKERS.append(self)
        self.process = context.Process(target=_worker_main, args=(jobs_end, results_end, model_dir, inherited),
                                       daemon=True)
        self.process.start()
        jobs_end.close()  # the parent keeps only its own ends: the child's death then reads as end-of-file
        results_end.close()

    def send(self, message) -> None:
        try:
            self.jobs.send(message)
        except OSError:  # already dead: its result pipe reads end-of-file and the job is tried again
            pass

    def close(self) -> None:
        """Close the parent's pipe ends: a live worker reads end-of-file and leaves."""
        for pipe in (self.jobs, self.results):
            pipe.close()
        if self in _WORKERS:
            _WORKERS.remove(self)

    def stop(self) -> None:
        self.close()
        self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _worker_main(jobs, results, model_dir: str | None, inherited: bool = False) -> None:
    """A worker process: load the model once (or use the one it was forked with), then answer each job with its
    outcome until the job pipe closes."""
    import signal

    from mididdsp._malloc import retain_freed_memory
    from mididdsp.cli import exit_without_teardown

    # Ctrl-C reaches the terminal's whole process group: the driver stops the batch and closes the workers' pipes,
    # and a worker leaves quietly then (each printed its own KeyboardInterrupt traceback)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    retain_freed_memory()  # a process of ours (a library caller's driver may not keep freed memory)
    if inherited:
        # forked: the driver's ends of every worker's pipes came along; held here, a worker's job pipe would never
        # read end-of-file when the driver closes it, and that worker would not leave
        for worker in _WORKERS:
            worker.jobs.close()
            worker.results.close()
    else:
        _start_worker(model_dir)
    while True:
        try:
            job, data, settings = jobs.recv()
        except EOFError:  # the batch is over: leave without the interpreter's teardown (0.35 s with torch loaded)
            exit_without_teardown(0)
        outcome = _worker_render(job, data, settings)
        try:
            results.send(outcome)
        except OSError:  # the driver stopped (interrupted, or killed): nobody wants the answer
            exit_without_teardown(0)


def ray_engine(jobs: list[Job], settings: Settings, workers: int | None,
               address: str | None = None) -> Iterator[tuple[Job, Outcome]]:
    """Render ``jobs`` on Ray actors, each holding the model (one CPU each; ``workers`` of them, default the
    cluster's CPUs). ``address``: a running cluster (``auto`` or HOST:PORT); None starts a local Ray instance for
    this call and stops it after (a process already connected to Ray keeps its connection). Ray restarts an actor
    whose process died and retries its call, up to :data:`MAX_ATTEMPTS` tries of a file; a file that fails to render is a ``failed`` outcome, never retried."""
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:
        raise MididdspError("--engine ray needs Ray: pip install 'mididdsp[ray]'") from None
    started_here = not ray.is_initialized()  # a caller that connected already (a notebook, a test) keeps Ray up
    if started_here and address is None:
        ray.init(num_cpus=workers or available_cores(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    elif started_here:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    actors: list = []
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        count = min(workers or cpus, cpus)  # an actor the cluster has no CPU for would hold its files forever
        actor_class = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=MAX_ATTEMPTS - 1)(RenderActor)
        actors = [actor_class.remote(settings.model) for _ in range(count)]
        queue = list(reversed(jobs))
        running: dict = {}
        idle = [actor for actor in actors for _ in range(IN_FLIGHT_PER_WORKER)]
        while queue or running:
            while queue and idle:
                job, actor = queue.pop(), idle.pop()
                running[actor.render.remote(job, _read(job.input), settings)] = (job, actor)
            ready, _ = ray.wait(list(running), num_returns=1)
            for reference in ready:
                job, actor = running.pop(reference)
                idle.append(actor)
                try:
                    outcome = ray.get(reference)
                except (RayActorError, RayTaskError) as error:
                    outcome = Outcome("failed", error=_one_line(f"{job.input}: the Ray worker died while rendering "
                                                                f"it, {MAX_ATTEMPTS} times ({type(error).__name__})"))
                yield job, outcome
    finally:
        try:  # each live actor removes its scratch folder (a dead one's goes with the next actor on its node)
            ray.get([actor.close.remote() for actor in actors], timeout=CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - an actor that died or hangs at the end must not fail the batch
            pass
        if started_here:
            ray.shutdown()


class RenderActor:
    """A Ray actor (made remote in :func:`ray_engine`): loads the model once, renders file after file.

    Its temporary files go under a scratch folder of its own on its node, named by host and process like a local
    batch's: an actor killed mid-file leaves it, and the next actor that starts on that node (Ray's restart of
    the killed one, or a later batch's) removes it (:func:`remove_stale_scratch`); :meth:`close` removes it at the
    batch's end."""

    def __init__(self, model_dir: str | None):
        from mididdsp._malloc import retain_freed_memory

        retain_freed_memory()  # the actor's process is Ray's worker, ours for the batch
        remove_stale_scratch()
        self.scratch = _make_scratch()
        _start_worker(model_dir)

    def pid(self) -> int:
        return os.getpid()

    def render(self, job: Job, data: bytes | None, settings: Settings) -> Outcome:
        return _worker_render(job, data, dataclasses.replace(settings, scratch=self.scratch))

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
