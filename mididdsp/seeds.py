"""torch's seeded uniform draws, reproduced without torch: a render's seeds mean the same with and without it.

The prior's draws and the vibrato phases come from ``torch.rand(..., generator=torch.Generator().manual_seed(s))``
in the training code. torch's CPU generator is MT19937 seeded with the low 32 bits of the seed (Matsumoto and
Nishimura's ``init_genrand``, which numpy's legacy ``RandomState`` also uses), and each float32 it draws is the low
24 bits of one 32-bit output times 2^-24. tests/test_inference.py checks the bits against torch.
"""
from __future__ import annotations

import numpy as np


def torch_uniform(seed: int | None, shape: tuple[int, ...]) -> np.ndarray:
    """``torch.rand(*shape, generator=torch.Generator().manual_seed(seed))``, float32, bit for bit (None: a fresh
    random seed, as ``Generator.seed()``)."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    count = int(np.prod(shape, dtype=np.int64))
    words = np.random.RandomState(int(seed) & 0xFFFFFFFF).randint(0, 1 << 32, size=count, dtype=np.uint32)
    return ((words & np.uint32(0xFFFFFF)).astype(np.float32) * np.float32(2.0 ** -24)).reshape(shape)
