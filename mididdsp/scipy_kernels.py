"""The two scipy routines a render calls, BLAS's ``sgemm`` and pocketfft's real FFT, without importing scipy's
Python packages.

Importing ``scipy.linalg`` or ``scipy.fft`` costs every process 0.12-0.15 s (their array-API layer imports
numpy.f2py, numpy.ma, numpy.polynomial, scipy.special ...), a third of a one-note render's whole run. The routines
themselves live in compiled modules that need only numpy, ``scipy.linalg._fblas`` and
``scipy.fft._pocketfft.pypocketfft``; they are loaded here from their files, in a few milliseconds. The FFT is
called as ``scipy.fft.rfft`` / ``irfft`` call it (zero-padded or cut to ``n``, one thread), so the bits are
scipy's (tests/test_scipy_kernels.py). Where a file or its interface is not as expected (another scipy), the
public functions are used instead: the same results, the slower start.
"""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np

_BACKWARD, _INVERSE_SCALED = 0, 2  # pocketfft's normalisation codes: none (forward), 1/n (inverse)


def _extension(relative: str, name: str):
    """scipy's compiled module ``relative`` (a path without suffix, under scipy's folder) loaded from its file, not
    entered in sys.modules (a later ``import scipy.linalg`` loads its package as usual); None if it is not there."""
    import scipy

    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = Path(scipy.__file__).parent / f"{relative}{suffix}"
        if path.is_file():
            try:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except ImportError:
                return None
            return module
    return None


@functools.lru_cache(maxsize=1)
def sgemm() -> Callable:
    """scipy's ``sgemm(alpha, a, b, beta=0, c=None, trans_a=0, trans_b=0, overwrite_c=0)`` (its OpenBLAS)."""
    module = _extension("linalg/_fblas", "scipy.linalg._fblas")
    if module is not None and hasattr(module, "sgemm"):
        return module.sgemm
    from scipy.linalg.blas import sgemm as package_sgemm

    return package_sgemm


@functools.lru_cache(maxsize=1)
def _pocketfft():
    module = _extension("fft/_pocketfft/pypocketfft", "scipy.fft._pocketfft.pypocketfft")
    if module is None or not all(hasattr(module, name) for name in ("r2c", "c2r")):
        return None
    try:  # the interface scipy's own wrappers use: (array, axes, [n,] forward, normalisation, out, threads)
        module.r2c(np.zeros(4, np.float32), (0,), True, _BACKWARD, None, 1)
        module.c2r(np.zeros(3, np.complex64), (0,), 4, False, _INVERSE_SCALED, None, 1)
    except (TypeError, ValueError):
        return None
    return module


def _fitted(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` [L] zero-padded or cut to ``n`` along its last axis, as ``scipy.fft`` does before transforming."""
    if x.shape[-1] == n:
        return x
    if x.shape[-1] > n:
        return x[..., :n]
    out = np.zeros(x.shape[:-1] + (n,), x.dtype)
    out[..., :x.shape[-1]] = x
    return out


def rfft(x: np.ndarray, n: int) -> np.ndarray:
    """``scipy.fft.rfft(x, n)`` of a float32 or float64 array [..., L]: [..., n // 2 + 1] complex."""
    module = _pocketfft()
    if module is None:
        import scipy.fft

        return scipy.fft.rfft(x, n)
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return module.r2c(_fitted(np.require(x, requirements="A"), n), (x.ndim - 1,), True, _BACKWARD, None, 1)


def irfft(spectrum: np.ndarray, n: int) -> np.ndarray:
    """``scipy.fft.irfft(spectrum, n)`` of a complex array [..., M]: [..., n] real, scaled by 1 / n."""
    module = _pocketfft()
    if module is None:
        import scipy.fft

        return scipy.fft.irfft(spectrum, n)
    spectrum = np.asarray(spectrum)
    if spectrum.dtype not in (np.complex64, np.complex128):
        spectrum = spectrum.astype(np.complex128)
    fitted = _fitted(np.require(spectrum, requirements="A"), n // 2 + 1)
    return module.c2r(fitted, (spectrum.ndim - 1,), n, False, _INVERSE_SCALED, None, 1)
