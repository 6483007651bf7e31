"""mididdsp._malloc: with glibc's thresholds set, freed large arrays' pages are reused, not faulted in again."""
import subprocess
import sys

import pytest

# Arrays of 16, 16 and 8 MB made and freed ten times: with glibc's defaults the 40 MB freed at the top of the heap
# exceed its (dynamic) trim threshold and part goes back to the system, so each round faults pages in again.
PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "retain":
    from mididdsp._malloc import retain_freed_memory
    assert retain_freed_memory()
def once():
    a, b, c = np.ones(2 << 20), np.ones(2 << 20), np.ones(1 << 20)
    return a.sum() + b.sum() + c.sum()
once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    once()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_not_faulted_in_again():
    assert minor_faults("default") > 10 * 1000  # measured: about 1 500 pages a round
    assert minor_faults("retain") < 500
