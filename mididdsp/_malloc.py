"""Keep freed memory in the process (glibc): large arrays are reused instead of mapped afresh.

A render allocates and frees arrays of megabytes for every voice and stage (the generator's [T, 64] activations,
its [T, 131] outputs, the synthesizer's blocks). glibc serves those from fresh ``mmap`` pages, or hands the top
of its heap back to the system after a free, so every new array page-faults on first touch: a [15 000, 131]
output's page faults cost 3 ms, as much as the matrix product writing it. With the thresholds below, blocks up
to 32 MB come from the heap and freed memory stays there for the next array: the generator ran 11 % faster
(60 s voice, one thread). The process keeps its peak size until it ends, which a render's process does soon.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1    # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024     # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024   # never trims in practice: a render's peak is under 2 GB


def retain_freed_memory() -> bool:
    """Set glibc's thresholds for this process (see the module docstring); False where the C library is not glibc
    (macOS, musl: nothing changes). Meant for the processes mididdsp starts (the command, batch workers), not for
    a library caller's process."""
    try:
        # the C library already loaded with the interpreter (ctypes.util.find_library would cost 7 ms of every
        # process's start: it imports subprocess and more)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))
