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
