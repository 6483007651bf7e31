"""The render's ahead-of-time kernels (mididdsp/native.py): the JIT's bits, used only when current and only for
arguments that fit their signatures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mididdsp
from mididdsp import native, parallel
from mididdsp.render import PRETRAINED_MIDI
from mididdsp.score import Note, Score, Track

needs_build = pytest.mark.skipif(not native.built(), reason="the native kernels are not built (make install)")


def test_the_build_is_current_where_ci_requires_it():
    """CI sets MIDIDDSP_REQUIRE_NATIVE: a failed or stale build must not hide behind the JIT fallback."""
    if os.environ.get("MIDIDDSP_REQUIRE_NATIVE") != "1":
        pytest.skip("MIDIDDSP_REQUIRE_NATIVE is not set")
    assert native.built(), f"{native.KEY_FILE} is missing or out of date: run `python -m mididdsp.native`"


@needs_build
@pytest.mark.skipif(not (PRETRAINED_MIDI / "generator").is_dir(), reason="no shipped MIDI model")
def test_every_built_kernel_gives_the_jits_bits(monkeypatch):
    """A two-track render in which each kernel is called both ways on the same arguments: every output array and
    return value the same bits, and every kernel of the build called."""
    differences, called = {}, set()

    def both(self, *args):
        built = self._native
        if built is None or not native._fits(args, built[1]):
            return self.jit(*args)
        copies = [arg.copy() if isinstance(arg, np.ndarray) else arg for arg in args]
        native_result = built[0](*copies)
        jit_result = self.jit(*args)
        called.add(self.name)
        pairs = [(a, b) for a, b in zip(copies, args) if isinstance(a, np.ndarray)] + [(native_result, jit_result)]
        for left, right in pairs:
            left, right = np.asarray(left), np.asarray(right)
            same_bits = left.shape == right.shape and left.tobytes() == right.tobytes()
            if not same_bits:
                differences[self.name] = True
        return jit_result

    monkeypatch.setattr(native.Kernel, "__call__", both)
    phrase = [Note(0.1, 0.5, 67, 90), Note(0.5, 1.0, 69, 80), Note(1.1, 1.6, 71, 100), Note(1.7, 2.4, 72, 70)]
    chord = [Note(0.3, 1.8, 48, 80), Note(0.3, 1.8, 55, 60), Note(2.0, 2.6, 53, 90)]
    score = Score([Track("violin", 40, False, phrase), Track("brass", 61, False, chord)], 2.6)
    previous = parallel.set_threads(1)
    try:
        mididdsp.load_model().render(score, seed=3)
    finally:
        parallel.set_threads(previous)
    assert not differences, sorted(differences)
    assert called == set(native.KERNELS), sorted(set(native.KERNELS) - called)


@needs_build
def test_arguments_outside_a_signature_go_to_the_jit():
    """The extension reads whatever memory it is given: a float64 or a strided array where the signature says
    C-ordered float32 must reach the JIT (which compiles for it), and give the reference's values."""
    from mididdsp.dsp.kernels import noise_key, uniform_noise_reference

    noise = native.kernel(native.DSP, "uniform_noise")
    expected = uniform_noise_reference(5, 100, 64)
    out32 = np.empty(64, np.float32)
    noise(np.uint64(noise_key(5)), np.uint64(100), out32)
    np.testing.assert_array_equal(out32, expected)
    out64 = np.empty(64, np.float64)
    noise(np.uint64(noise_key(5)), np.uint64(100), out64)
    np.testing.assert_array_equal(out64, expected.astype(np.float64))
    strided = np.zeros(128, np.float32)[::2]
    noise(np.uint64(noise_key(5)), np.uint64(100), strided)
    np.testing.assert_array_equal(strided, expected)
    specs = noise._native[1]
    key, first = np.uint64(noise_key(5)), np.uint64(100)
    assert native._fits((key, first, out32), specs)
    assert not native._fits((key, first, out64), specs) and not native._fits((key, first, strided), specs)
    # scalars as numba would type them: a Python int is int64, not the uint64 the signature declares
    assert not native._fits((int(key), first, out32), specs) and not native._fits((key, 100.0, out32), specs)
    angle = native.kernel(native.DSP, "oscillator_angle")._native[1]  # (f4[::1], f4[::1], f8, f8, f4[::1], f4[::1])
    arrays = np.zeros(8, np.float32)
    assert native._fits((arrays, arrays, 16000.0, np.float64(0.5), arrays, arrays), angle)
    assert not native._fits((arrays, arrays, np.float32(16000.0), 0.5, arrays, arrays), angle)
    assert not native._fits((arrays, arrays, 16000, 0.5, arrays, arrays), angle)


def test_a_build_for_other_sources_or_another_machine_is_not_used(tmp_path, monkeypatch):
    """The key file names what the module was built from; any difference (here: the sources, the CPU) and the
    module is not loaded."""
    record = {"key": native.key(), "file": "missing.so", "arguments": {}}
    key_file = tmp_path / "key.json"
    monkeypatch.setattr(native, "KEY_FILE", key_file)
    for change in ({"sources": "0" * 64}, {"cpu": "another|avx512f"}):
        key_file.write_text(json.dumps({**record, "key": {**record["key"], **change}}))
        native._built.cache_clear()
        with pytest.warns(native.StaleBuildWarning, match=f"built for other {next(iter(change))}.*mididdsp.native"):
            assert not native.built()
    key_file.write_text(json.dumps(record))  # the right key, but no module
    native._built.cache_clear()
    assert not native.built()
    native._built.cache_clear()


@needs_build
def test_the_key_follows_the_kernels_source(tmp_path, monkeypatch):
    """Editing a kernel's file changes the key, so an old build is no longer used."""
    package = tmp_path / "mididdsp"
    for relative in native.SOURCES:
        target = package / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((native.PACKAGE / relative).read_bytes())
    monkeypatch.setattr(native, "PACKAGE", package)
    same = native.key()
    (package / "dsp/_numba_kernels.py").write_text((package / "dsp/_numba_kernels.py").read_text() + "\n# edited\n")
    assert native.key()["sources"] != same["sources"]
    assert {k: v for k, v in native.key().items() if k != "sources"} == {k: v for k, v in same.items()
                                                                         if k != "sources"}


@needs_build
@pytest.mark.skipif(not (PRETRAINED_MIDI / "generator").is_dir(), reason="no shipped MIDI model")
def test_a_render_with_the_build_imports_neither_numba_nor_scipys_packages(tmp_path):
    """What the build is for: a render process that never starts numba, LLVM, scipy.linalg or scipy.fft (about
    0.35 s of every process's start before)."""
    score = Score([Track("violin", 40, False, [Note(0.1, 0.6, 69, 90), Note(0.7, 1.2, 72, 80)])], 1.2)
    midi = tmp_path / "p.mid"
    score.write_midi(midi)
    code = ("import sys\nfrom mididdsp.cli import main\n"
            f"assert main(['render', {str(midi)!r}, '-o', {str(tmp_path / 'p.wav')!r}, '--quiet']) == 0\n"
            "bad = [m for m in ('numba', 'llvmlite', 'scipy.linalg', 'scipy.fft', 'scipy.special') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
