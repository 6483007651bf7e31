"""Training step time of every task on the CPU and on the accelerator (fp32 and bf16-mixed), through the same
Lightning Trainer settings as ``mididdsp train``; also whether each trainer really put the model on the device.

    # once, here: a small prepared corpus (a few recordings of data/prepared with their teacher cache, ~15 MB)
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_train_accelerator.py --make-subset data/prepared \\
        --data data/bench_small --recordings 8
    # a CPU smoke run at tiny sizes
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_train_accelerator.py --data data/bench_small --tiny \\
        --steps 5 --warmup 2 --json /tmp/bench_train.json
    # on a GPU machine (carry data/bench_small; no network, torch + Lightning + numpy + PyYAML are enough;
    # about 5 minutes: the CPU rows at full size are the slow part, --no-cpu skips them)
    PYTHONPATH=. python benchmarks/bench_train_accelerator.py --data data/bench_small --steps 30 --warmup 10 \\
        --cpu-threads 2 --num-workers 4 --json $OUT/bench_train.json

For each task (``autoencoder``, ``synthesis_coder`` (the autoencoder task with the coder's config),
``synthesis_generator``, ``expression_prior``) and each of cpu fp32 (``--cpu-threads`` threads, default 2: the
issue's 2-core CPU), cuda fp32 and cuda bf16-mixed (when CUDA is available): builds the task's data and module
as ``mididdsp train`` does, runs ``--warmup`` + ``--steps`` training steps with a Trainer made with the config's
accelerator / precision settings (no validation, no checkpoints, no loggers) and reports the seconds per step
after warm-up (wall time from the end of step ``warmup`` to the end of the last, the device synchronised at both
ends: it includes data loading, as training does), the device the model's parameters were on during training,
the trainer's root device and precision, and the last loss. The ``config`` row ``accelerator: auto`` checks that
each packaged config picks the accelerator by itself. ``--tiny`` shrinks batches / crops / widths for a quick
CPU check (its figures mean nothing). Writes a table and, with ``--json``, every row.

Targets (issue 25, part 3), on one GPU against 2 CPU cores: every task on the accelerator under ``accelerator:
auto``; the synthesis generator's accelerator step at most a tenth of its 2-core CPU step (before the work of
this branch: 0.32 s on an H200 against 0.16 s on 2 cores, the autoencoder 9 ms, 50x its CPU step); bf16-mixed
faster than fp32 where the model is large enough. Expected on a GPU: the autoencoder and the synthesis coder
(0.6 M parameters, GRU over 500 steps) gain from bf16; the generator (0.1 M parameters, 64 channels) and the
prior (0.1 M) are bound by kernel launches and host work, not arithmetic, so bf16 should not help them (it adds
casts) and their configs stay at 32-true. THE GPU NUMBERS ARE NOT YET MEASURED: this script was only run on the
CPU when written (no GPU in that session); run it on a GPU and record the table.

Measured on the CPU for this branch (benchmarks/profile_generator_step.py, the synthesis generator at full size,
batch 8, one thread, 6 steps, a loaded 2-core machine, CPU seconds): before 0.58-0.67 s a step (data 26-29 ms),
after 0.49-0.52 s (data 17-18 ms); ATen operator calls per step (each one or more kernel launches on a GPU)
13 650 -> 3 230 (forward 7 206 -> 971, backward 4 614 -> 995); host reads that are device syncs on an
accelerator ~108 -> ~11 per step. Losses equal to float rounding (step 1 bit-equal, 1e-5 relative after 6 steps).

The generator's remaining host syncs per step on an accelerator are in code this branch left alone (see
benchmarks/profile_generator_step.py for the counts): the tilt solve ``_solve_tilt`` in
mididdsp/synthesis/generator.py (``bool(open_.any())`` and ``nonzero()`` every 4 iterations, ~3 + 3 per step
now that the batch is one call) and the harmonic synthesizer's ``.item()`` reads in mididdsp/dsp/synths.py
(``_harmonic_block``: 2; the per-row ``_apply_nyquist_gain_`` loop is now batched on accelerators) and
dsp/core.py ``normalize_harmonic_distribution`` (2), plus one in NonFiniteGuard (the loss and gradient check).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

# task name -> packaged config ("autoencoder": the shipped tiny autoencoder, the 9 ms step;
# "autoencoder_full": the published-size one, 3.9 M parameters, not run unless asked for)
TASK_CONFIGS = {"autoencoder": "autoencoder_tiny", "synthesis_coder": "synthesis_coder",
                "synthesis_generator": "synthesis_generator", "expression_prior": "expression_prior",
                "autoencoder_full": "autoencoder"}
DEFAULT_TASKS = ["autoencoder", "synthesis_coder", "synthesis_generator", "expression_prior"]
# --tiny: small enough for a CPU check in seconds per step
TINY = {
    "autoencoder": {"data.batch_size": 2, "data.crop_seconds": 1.0, "model.hidden_size": 32},
    "autoencoder_full": {"data.batch_size": 2, "data.crop_seconds": 1.0, "model.hidden_size": 32,
                         "model.mlp_size": 32},
    "synthesis_coder": {"data.batch_size": 2, "data.crop_seconds": 1.0, "model.hidden_size": 32,
                        "model.conv_channels": 16, "model.mlp_size": 64},
    "synthesis_generator": {"data.batch_size": 2, "data.window_seconds": 2.0, "model.channels": 16,
                            "model.layers": 3},
    "expression_prior": {"data.batch_size": 4, "data.segment_notes": 16},
}


# --- a small corpus ------------------------------------------------------------------------------------------------
def make_subset(source: Path, out: Path, recordings: int, valid: int = 2) -> Path:
    """Copy ``recordings`` training and ``valid`` validation recordings with notes (and teacher targets) of the
    prepared folder ``source`` into ``out``: manifest, shards and every teacher cache's files. Instrument ids stay."""
    manifest = json.loads((source / "manifest.json").read_text())
    caches = [d for d in (source / "teacher").iterdir() if d.is_dir()] if (source / "teacher").is_dir() else []
    from mididdsp.datasets.shards import shard_name

    def usable(recording: dict) -> bool:
        return recording.get("has_notes", True) and all((d / shard_name(recording["id"])).is_file() for d in caches)

    chosen, seen = [], {"train": 0, "valid": 0}
    wanted = {"train": recordings, "valid": valid}
    # spread over instruments: round-robin by instrument within each split
    for split in ("train", "valid"):
        pool = [r for r in manifest["recordings"] if r["split"] == split and usable(r)]
        by_instrument: dict = {}
        for recording in pool:
            by_instrument.setdefault(recording["instrument"], []).append(recording)
        while seen[split] < wanted[split] and any(by_instrument.values()):
            for name in sorted(by_instrument):
                if by_instrument[name] and seen[split] < wanted[split]:
                    chosen.append(by_instrument[name].pop(0))
                    seen[split] += 1
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for recording in chosen:
        target = out / recording["shard"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / recording["shard"], target)
    for cache in caches:
        (out / "teacher" / cache.name).mkdir(parents=True)
        for path in cache.iterdir():
            if path.suffix != ".npz" or any(path.name == shard_name(r["id"]) for r in chosen):
                shutil.copy2(path, out / "teacher" / cache.name / path.name)
    (out / "manifest.json").write_text(json.dumps({**manifest, "recordings": chosen}, indent=1))
    return out


# --- configs without OmegaConf (a GPU machine may have only torch, Lightning, numpy and PyYAML) --------------------
def task_config(name: str, data_dir: Path, overrides: dict) -> dict:
    """The packaged config ``name`` resolved as ``mididdsp train`` does (defaults <- YAML <- overrides)."""
    import yaml

    from mididdsp.training.train import CONFIG_DIR, check_config, task_defaults

    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()) or {}
    task = str(raw.get("task", "autoencoder"))
    config = {"task": task, **copy.deepcopy(task_defaults(task))}
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = _merge(config[section], values)
        else:
            config[section] = values
    config.setdefault("model", {})
    for key, value in {"data.dir": str(data_dir), **overrides}.items():
        section, field = key.split(".", 1)
        node = config.setdefault(section, {})
        *path, last = field.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return check_config(config, name)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --- one measurement -------------------------------------------------------------------------------------------------
class StepClock:
    """Wall time from the end of step ``warmup`` to the end of step ``warmup + steps`` (device synchronised at
    both ends), and the model's device during training."""

    def __init__(self, warmup: int, steps: int) -> None:
        import pytorch_lightning as pl

        clock = self

        class Callback(pl.Callback):
            def on_train_start(self, trainer, pl_module) -> None:
                parameter = next(pl_module.parameters())
                clock.model_device = str(parameter.device)
                clock.root_device = str(trainer.strategy.root_device)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                done = trainer.global_step
                if done in (clock.warmup, clock.warmup + clock.steps):
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    clock.marks[done] = time.perf_counter()
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                if done == clock.warmup + clock.steps and loss is not None:
                    clock.last_loss = float(loss)

        self.warmup, self.steps = warmup, steps
        self.marks: dict[int, float] = {}
        self.model_device = self.root_device = None
        self.last_loss: float | None = None
        self.callback = Callback()

    def seconds_per_step(self) -> float | None:
        if self.warmup in self.marks and self.warmup + self.steps in self.marks:
            return (self.marks[self.warmup + self.steps] - self.marks[self.warmup]) / self.steps
        return None


def measure(task_name: str, config: dict, accelerator: str | None, precision: str | None, warmup: int,
            steps: int, num_workers: int | None) -> dict:
    """One (task, accelerator, precision) row; accelerator None: the config's own setting."""
    import pytorch_lightning as pl

    from mididdsp.training.callbacks import NonFiniteGuard
    from mididdsp.training.train import _quiet_lightning, task_module

    _quiet_lightning()
    config = copy.deepcopy(config)
    train_cfg = config["train"]
    if accelerator is not None:
        train_cfg["accelerator"] = accelerator
    if precision is not None:
        train_cfg["precision"] = precision
    if num_workers is not None:
        config["data"]["num_workers"] = num_workers
    train_cfg["max_steps"] = warmup + steps
    row = {"task": task_name, "accelerator": train_cfg["accelerator"], "precision": train_cfg["precision"],
           "batch_size": int(config["data"]["batch_size"]), "num_workers": int(config["data"]["num_workers"]),
           "threads": torch.get_num_threads()}
    task = task_module(config["task"])
    try:
        data = task.build_data(config)
        pl.seed_everything(int(train_cfg["seed"]), workers=True, verbose=False)
        module = task.build_module(config)
        row["parameters"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        clock = StepClock(warmup, steps)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = pl.Trainer(
                max_steps=warmup + steps, accelerator=train_cfg["accelerator"], devices=1,
                precision=train_cfg["precision"], gradient_clip_val=float(train_cfg["grad_clip"]) or None,
                gradient_clip_algorithm="norm", limit_val_batches=0, num_sanity_val_steps=0,
                log_every_n_steps=int(train_cfg["log_every"]), logger=False, enable_checkpointing=False,
                callbacks=[NonFiniteGuard(check_gradients=str(train_cfg["precision"]) not in ("16-mixed", "16")),
                           clock.callback], enable_progress_bar=False, enable_model_summary=False,
                use_distributed_sampler=False, default_root_dir=run_dir)
            trainer.fit(module, datamodule=data)
        row.update({"seconds_per_step": clock.seconds_per_step(), "model_device": clock.model_device,
                    "root_device": clock.root_device, "trainer_precision": str(trainer.precision),
                    "last_loss": clock.last_loss,
                    "on_accelerator": clock.model_device is not None and not clock.model_device.startswith("cpu")})
    except Exception as error:  # noqa: BLE001 - a failing row is reported, the others still run
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/bench_small"), help="prepared folder (with teacher)")
    parser.add_argument("--make-subset", type=Path, metavar="PREPARED",
                        help="first copy a few recordings of this prepared folder into --data")
    parser.add_argument("--recordings", type=int, default=8, help="training recordings of --make-subset")
    parser.add_argument("--tasks", nargs="*", default=DEFAULT_TASKS, choices=list(TASK_CONFIGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cpu-threads", type=int, default=2, help="torch threads for the CPU rows (issue: 2 cores)")
    parser.add_argument("--num-workers", type=int, default=None, help="data.num_workers (default: the config's)")
    parser.add_argument("--tiny", action="store_true", help="small sizes for a CPU check")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    parser.add_argument("--cpu-bf16", action="store_true", help="also run bf16-mixed on the CPU (a smoke check)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every task")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.make_subset:
        make_subset(args.make_subset, args.data, args.recordings)
        print(f"wrote {args.data} ({args.recordings} training recordings of {args.make_subset})", flush=True)
    extra = dict(item.split("=", 1) for item in args.set)
    extra = {key: yaml_value(value) for key, value in extra.items()}
    cuda = torch.cuda.is_available()
    rows = []
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda
            else None, "cpu_threads": args.cpu_threads, "steps": args.steps, "warmup": args.warmup, "tiny": args.tiny,
            "gpu_numbers_measured_before": False}
    for task_name in args.tasks:
        overrides = {**({**TINY[task_name], "data.num_workers": 0} if args.tiny else {}), **extra}
        config = task_config(TASK_CONFIGS[task_name], args.data, overrides)
        runs = []
        if not args.no_cpu:
            runs.append(("cpu", "32-true"))
            if args.cpu_bf16:
                runs.append(("cpu", "bf16-mixed"))
        if cuda:
            runs += [(None, "32-true"), ("gpu", "bf16-mixed")]  # None: the config's own accelerator (auto)
        for accelerator, precision in runs:
            threads = torch.get_num_threads()
            if accelerator == "cpu":
                torch.set_num_threads(args.cpu_threads)
            try:
                row = measure(task_name, config, accelerator, precision, args.warmup, args.steps, args.num_workers)
            finally:
                torch.set_num_threads(threads)
            row["asked"] = accelerator or f"config ({config['train']['accelerator']})"
            rows.append(row)
            print(format_row(row), flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"info": info, "rows": rows, "ratios": ratios(rows)}, indent=1))
        print(f"wrote {args.json}")
    return 0


def yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)


def format_row(row: dict) -> str:
    seconds = row.get("seconds_per_step")
    timing = f"{1000 * seconds:9.1f} ms" if seconds is not None else "        -   "
    where = row.get("model_device") or "-"
    return (f"{row['task']:20s} {str(row['asked']):14s} {row['precision']:11s} {timing}  model on {where:8s}"
            + (f"  ERROR {row['error']}" if "error" in row else ""))


def ratios(rows: list[dict]) -> dict:
    """Per task: accelerator fp32 step / 2-core CPU step (target <= 0.1) and bf16 / fp32 on the accelerator."""
    out = {}
    for task in dict.fromkeys(row["task"] for row in rows):
        mine = {(row["asked"] == "cpu", row["precision"]): row.get("seconds_per_step") for row in rows
                if row["task"] == task}
        cpu, gpu, bf16 = mine.get((True, "32-true")), mine.get((False, "32-true")), mine.get((False, "bf16-mixed"))
        out[task] = {"accelerator_over_cpu": gpu / cpu if gpu and cpu else None,
                     "bf16_over_fp32": bf16 / gpu if bf16 and gpu else None}
    return out


def table(rows: list[dict]) -> str:
    lines = ["task                 asked          precision    per step     model on  root device",
             "-" * 86]
    for row in rows:
        lines.append(format_row(row) + f"  {row.get('root_device') or '-'}")
    lines.append("")
    for task, value in ratios(rows).items():
        parts = [f"{name} {v:.3f}" for name, v in value.items() if v is not None and not math.isnan(v)]
        lines.append(f"{task:20s} " + (", ".join(parts) if parts else "(no accelerator rows)"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    raise SystemExit(main())
