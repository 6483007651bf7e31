"""Run every benchmarks/bench_*.py script in turn (``make bench``); each prints its own markdown table."""
from __future__ import annotations

import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).resolve().parent
failed = []
for script in sorted(here.glob("bench_*.py")):
    print(f"\n## {script.stem}\n", flush=True)
    if subprocess.call([sys.executable, str(script)]) != 0:
        failed.append(script.name)
if failed:
    print("failed: " + ", ".join(failed))
    sys.exit(1)
