"""Profile one synthesis-generator training step on the CPU: where the time goes and every host-device sync point.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/profile_generator_step.py --data data/prepared [--steps 4]
        [--json out.json] [--trainer] [--ops] [--cprofile] [--set model.channels=16 ...]

Counts are what matter here (a shared 2-core machine makes wall times noisy): each call that would make the host
wait for an accelerator (``Tensor.item``, ``bool``/``int``/``float`` of a tensor, ``tolist``, ``cpu``, ``numpy``,
``nonzero``) is counted per step by its call site (file:line outside torch), in these phases: ``data`` (dataset
items + collate), ``forward`` (the generator), ``losses`` (everything in ``compute_losses`` after the
generator), ``backward``, ``optimizer`` (clipping + Adam). CPU time (``time.process_time``) per phase is reported
too, and with ``--cprofile`` the top functions of the whole step. ``--trainer`` also runs a Lightning fit of
``--steps`` steps and counts the syncs of the full loop (logging, callbacks) per step.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

import torch

SYNC_METHODS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy", "nonzero")


class SyncCounter:
    """Counts calls of :data:`SYNC_METHODS` on tensors by (phase, method, call site) while installed."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.phase = "other"
        self._saved: dict = {}
        self._inside = False

    def _site(self) -> str:
        frame = sys._getframe(2)  # the caller of the wrapped method (no source lines read: cheap)
        while frame is not None:
            name = frame.f_code.co_filename
            if "/torch/" not in name and "/lightning_utilities/" not in name \
                    and not name.endswith("profile_generator_step.py"):
                return f"{os.path.relpath(name)}:{frame.f_lineno}"
            frame = frame.f_back
        return "torch/lightning internal"

    def _wrap(self, method: str, original):
        counter = self

        def wrapped(tensor, *args, **kwargs):
            if not counter._inside:
                counter._inside = True
                try:
                    counter.counts[(counter.phase, method, counter._site())] += 1
                finally:
                    counter._inside = False
            return original(tensor, *args, **kwargs)
        return wrapped

    def __enter__(self) -> "SyncCounter":
        for method in SYNC_METHODS:
            original = getattr(torch.Tensor, method)
            self._saved[method] = original
            setattr(torch.Tensor, method, self._wrap(method, original))
        return self

    def __exit__(self, *exc) -> None:
        for method, original in self._saved.items():
            setattr(torch.Tensor, method, original)

    @contextlib.contextmanager
    def at(self, phase: str, cpu_times: dict):
        previous, self.phase = self.phase, phase
        started = time.process_time()
        try:
            yield
        finally:
            cpu_times[phase] = cpu_times.get(phase, 0.0) + time.process_time() - started
            self.phase = previous


def op_counter(counter: SyncCounter):
    """A dispatch mode counting ATen operator calls by the counter's phase (each is a kernel launch or more on an
    accelerator: the per-step launch count is what bounds a small model there)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.counts[counter.phase] += 1
            return func(*args, **(kwargs or {}))
    return Ops()


def build(data_dir: str, overrides: list[str]):
    from mididdsp.training import generator_module as task
    from mididdsp.training.train import load_config

    config = load_config("synthesis_generator", [f"data.dir={data_dir}", *overrides])
    data = task.build_data(config)
    torch.manual_seed(0)
    module = task.build_module(config)
    data.setup()
    return config, data, module


def manual_steps(config: dict, data, module, steps: int, counter: SyncCounter, cprofile: bool) -> dict:
    """``steps`` training steps without Lightning (the maths of GeneratorModule.training_step); returns per-step
    CPU seconds by phase and the losses of each step."""
    from mididdsp.training.data import mix_seed
    from mididdsp.training.module import seeded

    dataset = data.datasets["train"]
    collate = sys.modules[type(module).__module__].collate
    optimizer = torch.optim.Adam([p for p in module.model.parameters() if p.requires_grad], lr=1e-3)
    module.train()
    cpu: dict = {}
    losses = []
    profiler = cProfile.Profile() if cprofile else None
    batch_size = data.batch_size
    for step in range(steps):
        if profiler is not None and step == 1:  # the first step warms caches up
            profiler.enable()
        with counter.at("data", cpu):
            batch = collate([dataset[step * batch_size + j] for j in range(batch_size)])
        step_seed = mix_seed(module.seed, step)
        generator = torch.Generator().manual_seed(step_seed)
        with seeded(step_seed, torch.device("cpu")):
            original_forward = module.model.forward

            def timed_forward(*args, **kwargs):
                with counter.at("forward", cpu):
                    return original_forward(*args, **kwargs)
            module.model.forward = timed_forward
            try:
                with counter.at("losses", cpu):
                    out = module.compute_losses(batch, generator)
            finally:
                del module.model.forward
        losses.append({name: float(value) for name, value in out.items()})
        with counter.at("backward", cpu):
            optimizer.zero_grad()
            out["loss"].backward()
        with counter.at("optimizer", cpu):
            torch.nn.utils.clip_grad_norm_(module.model.parameters(), 3.0)
            optimizer.step()
    if profiler is not None:
        profiler.disable()
    cpu["losses"] = cpu["losses"] - cpu.get("forward", 0.0)  # the forward is timed on its own
    text = io.StringIO()
    if profiler is not None:
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    return {"cpu_seconds_per_step": {k: v / steps for k, v in cpu.items()}, "losses": losses,
            "cprofile": text.getvalue()}


def trainer_steps(config: dict, steps: int, counter: SyncCounter, run_dir: str) -> float:
    from mididdsp.training.train import train

    config = dict(config)
    config["train"] = {**config["train"], "max_steps": steps, "val_every_n_steps": 10 ** 6, "checkpoint_every": 10 ** 6,
                       "progress_bar": True, "export": False, "accelerator": "cpu", "devices": 1}
    counter.phase = "trainer"
    started = time.process_time()
    train(config, run_dir)
    return (time.process_time() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--trainer", action="store_true")
    parser.add_argument("--ops", action="store_true", help="count ATen operator calls per step and phase")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, data, module = build(args.data, list(args.set))
    with SyncCounter() as counter:
        ops = op_counter(counter) if args.ops else contextlib.nullcontext()
        with ops:
            result = manual_steps(config, data, module, args.steps, counter, args.cprofile)
        if args.ops:
            result["aten_ops_per_step"] = {k: v / args.steps for k, v in ops.counts.items()}
        manual_counts = dict(counter.counts)
        counter.counts.clear()
        trainer_cpu = None
        if args.trainer:
            import tempfile

            with tempfile.TemporaryDirectory() as run_dir:
                trainer_cpu = trainer_steps(config, args.steps, counter, run_dir)
        trainer_counts = dict(counter.counts)
    print(f"CPU seconds per step by phase ({args.steps} steps, batch {data.batch_size}):")
    total = sum(result["cpu_seconds_per_step"].values())
    for phase, seconds in result["cpu_seconds_per_step"].items():
        print(f"  {phase:10s} {seconds:8.4f}  {100 * seconds / max(total, 1e-12):5.1f} %")
    print(f"  {'total':10s} {total:8.4f}")
    if "aten_ops_per_step" in result:
        print("ATen operator calls per step:", json.dumps(result["aten_ops_per_step"]),
              "total", sum(result["aten_ops_per_step"].values()))
    if trainer_cpu is not None:
        print(f"Lightning fit: {trainer_cpu:.4f} CPU s per step (includes start-up)")
    print("\nsync points per step (phase, method, site: count):")
    for name, counts in (("manual", manual_counts), ("trainer", trainer_counts)):
        if not counts:
            continue
        print(f" [{name}] total {sum(counts.values()) / args.steps:.1f} per step")
        for (phase, method, site), count in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {phase:9s} {method:9s} {count / args.steps:7.2f}  {site}")
    print("\nlosses:", json.dumps(result["losses"][:3]))
    if result["cprofile"]:
        print(result["cprofile"])
    if args.json:
        args.json.write_text(json.dumps({
            "cpu_seconds_per_step": result["cpu_seconds_per_step"], "losses": result["losses"],
            "aten_ops_per_step": result.get("aten_ops_per_step"),
            "syncs_manual": {f"{p}|{m}|{s}": c / args.steps for (p, m, s), c in manual_counts.items()},
            "syncs_trainer": {f"{p}|{m}|{s}": c / args.steps for (p, m, s), c in trainer_counts.items()},
            "trainer_cpu_seconds_per_step": trainer_cpu}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
