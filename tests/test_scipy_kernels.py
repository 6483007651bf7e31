"""scipy's sgemm and real FFT loaded from their compiled modules (mididdsp/scipy_kernels.py): scipy's own bits."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.fft
from scipy.linalg.blas import sgemm as package_sgemm

from mididdsp import scipy_kernels


@pytest.mark.parametrize("length, n", [(1000, 1000), (700, 1024), (4096, 3000), (128000, 147456), (5, 6)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rfft_and_irfft_are_scipy_ffts_bits(length, n, dtype):
    """Zero-padded, cut and exact lengths, even and odd sizes, both precisions: the same bits as scipy.fft."""
    signal = np.random.default_rng(length).standard_normal(length).astype(dtype)
    spectrum = scipy_kernels.rfft(signal, n)
    expected = scipy.fft.rfft(signal, n)
    assert spectrum.dtype == expected.dtype and spectrum.tobytes() == expected.tobytes()
    back = scipy_kernels.irfft(spectrum, n)
    expected_back = scipy.fft.irfft(expected, n)
    assert back.dtype == expected_back.dtype and back.tobytes() == expected_back.tobytes()
    if n % 2 == 0 and length <= n:  # a round trip gives the signal back
        np.testing.assert_allclose(back[:length], signal, atol=1e-5 if dtype == np.float32 else 1e-12)


def test_a_batch_of_rows_and_the_public_fallback_agree(monkeypatch):
    rows = np.random.default_rng(1).standard_normal((3, 500)).astype(np.float32)
    direct = scipy_kernels.rfft(rows, 512)
    assert direct.tobytes() == scipy.fft.rfft(rows, 512).tobytes()
    monkeypatch.setattr(scipy_kernels, "_pocketfft", lambda: None)  # another scipy: the public functions
    assert scipy_kernels.rfft(rows, 512).tobytes() == direct.tobytes()
    assert scipy_kernels.irfft(direct, 512).tobytes() == scipy.fft.irfft(direct, 512).tobytes()


def test_sgemm_is_scipys_accumulating_in_place():
    rng = np.random.default_rng(2)
    weight = np.asfortranarray(rng.standard_normal((8, 5)).astype(np.float32))
    rows = rng.standard_normal((11, 5)).astype(np.float32)
    out = rng.standard_normal((11, 8)).astype(np.float32)
    expected = package_sgemm(1.0, weight, rows.T, beta=1.0, c=out.T.copy(order="F")).T
    result = scipy_kernels.sgemm()(1.0, weight, rows.T, beta=1.0, c=out.T, overwrite_c=1)
    assert np.shares_memory(result, out)  # accumulated into out's own memory
    assert out.tobytes() == np.ascontiguousarray(expected).tobytes()
    np.testing.assert_allclose(out, expected, rtol=0)


def test_loading_them_imports_neither_scipy_linalg_nor_scipy_fft():
    code = ("import sys, numpy as np\nfrom mididdsp import scipy_kernels\n"
            "scipy_kernels.sgemm(); scipy_kernels.rfft(np.ones(8, np.float32), 8)\n"
            "assert scipy_kernels._pocketfft() is not None\n"
            "bad = [m for m in ('scipy.linalg', 'scipy.fft', 'scipy.special') if m in sys.modules]\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
