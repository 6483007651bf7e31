"""Small timing helpers shared by the benchmark scripts (medians over repeats, 2 threads like the CI machine)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(function: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(rows: list[dict], columns: list[str]) -> str:
    """Markdown table of ``rows`` (dicts) with the given column order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines)


def tree_peak_pss_mb(command: list[str], interval_s: float = 0.02, **popen_options) -> tuple[float, int]:
    """Run ``command`` and sample the proportional set size (PSS: each shared page divided among the processes
    that map it) of it and all its descendants every ``interval_s``: (the peak of their sum in MB, the exit code).
    The memory a machine must have for the process tree (Linux: /proc/PID/smaps_rollup); a forked copy's pages
    shared with its parent are counted once, where adding up peak RSS would count them twice."""
    import os
    import subprocess
    import time

    def descendants(root: int) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(parent, []).append(int(entry))
        found, stack = [], [root]
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack.extend(children.get(pid, []))
        return found

    def pss_kb(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    process = subprocess.Popen(command, **popen_options)
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(pss_kb(pid) for pid in descendants(process.pid)))
        time.sleep(interval_s)
    return peak / 1024, process.returncode
