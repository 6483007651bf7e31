"""The render's compiled kernels built ahead of time: one extension module per machine, so that a render imports
neither numba nor LLVM.

Why: numba's JIT, even served from its on-disk cache, costs every process about 0.5 s before its first note
(importing numba, then its CPU target's set-up on the first call: typing registries, LLVM, ``scipy.linalg``). That
is more than FluidSynth's whole run of a short file. The same kernels compiled by ``numba.pycc`` into
``mididdsp/_render_kernels*.so`` load in under a millisecond.

Build it with ``python -m mididdsp.native`` (``make install`` does; about 10 s, needs a C compiler). The module is
used only while its key matches: the kernels' sources, numba's version and this CPU (it is compiled for the host's
instruction set, as the JIT is). Otherwise, for a kernel not built, or for arguments outside a kernel's signature,
the call goes to numba's JIT: the same source compiled with the same options, the same bits
(tests/test_native.py). The extension checks nothing itself (a float64 array where float32 is declared would be
read as garbage), so every call is checked here against the signature first (about 5 us).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

MODULE_NAME = "_render_kernels"
PACKAGE = Path(__file__).resolve().parent
KEY_FILE = PACKAGE / f"{MODULE_NAME}.json"

DSP = "mididdsp.dsp._numba_kernels"
SYNTHESIS = "mididdsp.synthesis._numba_kernels"
PRIOR = "mididdsp.expression._prior_numba"

# What a render calls, in numba's signature syntax: (module, signature). C-contiguous arrays (``::1``) throughout,
# as the render's callers pass them; other layouts go to the JIT.
KERNELS = {
    "harmonic": (DSP, "void(f4[:, ::1], f4[:, ::1], f4[:, ::1], f4[:, :, ::1], f4[::1], f4[::1], f8, f8, f4[:, ::1])"),
    "harmonic_frame_amplitudes": (DSP, "void(f4[::1], f4[::1], f4[:, ::1], f8, f8, f4[:, ::1])"),
    "filtered_noise_add": (DSP, "void(f4[:, ::1], f4[::1], i8, i8, i8, f4[::1])"),
    "oscillator_angle": (DSP, "f8(f4[::1], f4[::1], f8, f8, f4[::1], f4[::1])"),
    "uniform_noise": (DSP, "void(u8, u8, f4[::1])"),
    "frame_positions": (SYNTHESIS, "void(i8[::1], i8[::1], i8[::1], i8, i8[::1], b1[::1], i8[::1], i8[::1], i8[::1])"),
    "frame_features": (SYNTHESIS, "void(f4[:, ::1], f4[:, ::1], i8[::1], b1[::1], i8[::1], i8[::1], i8[::1], f8, "
                                  "f4[:, ::1])"),
    "frame_controls": (SYNTHESIS, "void(f4[:, ::1], i8[::1], b1[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], "
                                  "f4[:, ::1], f4[::1], f4[::1], f4[::1], f4[::1], f4[::1], f4[::1], f8[::1], "
                                  "f4[::1], f4[::1], f4[::1], f4[::1], f4[::1], f4[::1])"),
    "layer_norm_leaky": (SYNTHESIS, "f4[:, ::1](f4[:, ::1], f4[::1], f4[::1], f4, f4, f4[:, ::1], f4[::1])"),
    "tilt_kept": (SYNTHESIS, "f4[:, ::1](f4[:, ::1], f4[::1], f4[::1], f4[:, ::1])"),
    "gru_sequence": (PRIOR, "void(f4[:, :, ::1], f4[:, ::1], f4[::1], i8[::1], b1, f4[:, :, ::1])"),
    "sample_loop": (PRIOR, "f8[:, :, ::1](f4[:, :, ::1], f8[:, ::1], f8[:, ::1], f8[::1], f4[:, :, :, ::1], "
                           "f8[:, :, ::1], f8[:, :, ::1], f8[:, :, :, ::1], f8[:, :, ::1], f8[:, ::1], i8[::1], "
                           "f8[:, :, ::1], b1[:, :, ::1], f8[:, :, ::1], f8, i8, i8, f8[:, :, ::1])"),
}

# The files whose text the compiled code depends on: the kernels, and the modules they take constants from.
SOURCES = ("dsp/_numba_kernels.py", "dsp/kernels.py", "synthesis/_numba_kernels.py", "synthesis/kernels.py",
           "expression/_prior_numba.py", "native.py")


def _cpu() -> str:
    """This machine's processor, as far as the compiled code cares: its model and instruction-set flags (Linux's
    /proc/cpuinfo; elsewhere the platform's own name). Read without LLVM, which is what this module avoids."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            fields = {}
            for line in cpuinfo:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
        return f"{fields.get('model name', '')}|{fields.get('flags', '')}"
    except OSError:
        import platform

        return f"{platform.machine()}|{platform.processor()}"


def key() -> dict:
    """What the built module must match to be used (numba's version is read from its metadata, not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    for relative in SOURCES:
        digest.update((PACKAGE / relative).read_bytes())
    try:
        numba_version = version("numba")
    except PackageNotFoundError:
        numba_version = None
    return {"sources": digest.hexdigest(), "numba": numba_version, "cpu": _cpu(),
            "python": sys.implementation.cache_tag}


class StaleBuildWarning(UserWarning):
    """The ahead-of-time module is there but was built from other sources, another numba or another CPU."""


@functools.lru_cache(maxsize=1)
def _built() -> tuple[object, dict] | None:
    """(the built module, its argument specs by kernel), or None where it is missing, out of date, or turned off
    (``MIDIDDSP_NATIVE=0``: numba's JIT for every kernel, as a comparison)."""
    if os.environ.get("MIDIDDSP_NATIVE") == "0":
        return None
    try:
        record = json.loads(KEY_FILE.read_text())
    except (OSError, ValueError):
        return None
    current = key()
    if record.get("key") != current:
        import warnings

        changed = sorted(name for name in current if (record.get("key") or {}).get(name) != current[name])
        warnings.warn(f"{KEY_FILE}: the compiled kernels were built for other {', '.join(changed)}; renders compile "
                      "them with numba's JIT instead (about 0.5 s more a process): run `python -m mididdsp.native`",
                      StaleBuildWarning, stacklevel=2)
        return None
    path = PACKAGE / record.get("file", "")
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"mididdsp.{MODULE_NAME}", path)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:
        return None
    return module, record["arguments"]


def built() -> bool:
    """Whether the ahead-of-time module is present and current here."""
    return _built() is not None


class Kernel:
    """One compiled kernel, called like the numba function: the built module's copy where the arguments fit its
    signature, numba's JIT otherwise (imported on first need)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    @functools.cached_property
    def _native(self) -> tuple[Callable, list] | None:
        built_module = _built()
        if built_module is None or self.name not in built_module[1]:
            return None
        specs = [(np.dtype(dtype), ndim) for dtype, ndim in built_module[1][self.name]]
        return getattr(built_module[0], self.name), specs

    @functools.cached_property
    def jit(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args):
        native = self._native
        if native is not None and _fits(args, native[1]):
            return native[0](*args)
        return self.jit(*args)


def _fits(args: tuple, specs: list) -> bool:
    """Whether ``args`` have the signature's types exactly as numba's JIT would type them: arrays of the dtype and
    dimensions, C-ordered and aligned; scalars of the dtype (a Python int is int64, a float float64, as numba
    types them). Where they do not, the JIT would compile another specialisation, with other arithmetic."""
    if len(args) != len(specs):
        return False
    for arg, (dtype, ndim) in zip(args, specs):
        if ndim == 0:
            if _scalar_dtype(arg) != dtype:
                return False
        elif not (type(arg) is np.ndarray and arg.dtype == dtype and arg.ndim == ndim
                  and arg.flags.c_contiguous and arg.flags.aligned):
            return False
    return True


def _scalar_dtype(value) -> np.dtype | None:
    if isinstance(value, np.generic):
        return value.dtype
    if isinstance(value, bool):  # before int: bool is an int
        return _BOOL
    if isinstance(value, int):
        return _INT64
    if isinstance(value, float):
        return _FLOAT64
    return None


_BOOL, _INT64, _FLOAT64 = np.dtype(bool), np.dtype(np.int64), np.dtype(np.float64)


@functools.lru_cache(maxsize=None)
def kernel(module: str, name: str) -> Kernel:
    """The kernel ``name`` of the numba module ``module`` (see :class:`Kernel`)."""
    return Kernel(module, name)


# ---- the build ----------------------------------------------------------------------------------------------------

def build(directory: Path = PACKAGE) -> Path:
    """Compile :data:`KERNELS` into ``directory`` and write the key file; returns the module's path. The files
    appear whole or not at all (written aside, then renamed; the key file last)."""
    import tempfile
    import warnings

    import numba
    from numba.core import codegen
    from numba.np.numpy_support import as_dtype
    from numba.pycc import CC
    from numba.pycc import compiler as pycc_compiler

    specs = {}
    with tempfile.TemporaryDirectory(dir=directory) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", category=numba.NumbaPendingDeprecationWarning)
        compiler = CC(MODULE_NAME)
        compiler.output_dir = scratch
        compiler.target_cpu = "host"  # the host's instruction set, as numba's JIT uses (its vector lanes)
        options = {}  # each kernel's own function, compiled with its own numba options
        for name, (module, signature) in KERNELS.items():
            target = getattr(importlib.import_module(module), name)
            parsed = numba.core.sigutils.normalize_signature(signature)[0]
            specs[name] = [[as_dtype(arg.dtype).str, arg.ndim] if isinstance(arg, numba.types.Array)
                           else [as_dtype(arg).str, 0] for arg in parsed]
            options[target.py_func] = target
            compiler.export(name, signature)(target.py_func)

        # pycc compiles every function with one set of default flags; here each gets those its @njit asks for
        # (fastmath, nogil), as the JIT would, so that the machine code and its rounding are the JIT's. And the
        # host's instruction-set features as the JIT reads them (CPUID), not those the CPU model's name implies: a
        # virtual machine may lack some, and code generated for others rounds differently.
        def compile_as_jitted(typing_context, target_context, function, args, return_type, flags, **kwargs):
            dispatcher = options[function]
            flags = dispatcher.targetdescr.options.parse_as_flags(flags.copy(), dispatcher.targetoptions)
            return plain_compile(typing_context, target_context, function, args, return_type, flags, **kwargs)

        plain_compile, pycc_compiler.compile_extra = pycc_compiler.compile_extra, compile_as_jitted
        plain_features = codegen.AOTCPUCodegen._customize_tm_features
        codegen.AOTCPUCodegen._customize_tm_features = lambda self: codegen.get_host_cpu_features()
        try:
            compiler.compile()
        finally:
            pycc_compiler.compile_extra = plain_compile
            codegen.AOTCPUCodegen._customize_tm_features = plain_features
        built_files = [name for name in os.listdir(scratch) if name.startswith(MODULE_NAME)
                       and name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
        if len(built_files) != 1:
            raise RuntimeError(f"numba.pycc left {built_files} in {scratch}, expected one extension module")
        target_path = directory / built_files[0]
        os.replace(Path(scratch) / built_files[0], target_path)
        record = {"key": key(), "file": built_files[0], "arguments": specs}
        key_scratch = Path(scratch) / "key.json"
        key_scratch.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(key_scratch, directory / KEY_FILE.name)
    _built.cache_clear()
    return target_path


def main() -> int:
    import time

    start = time.perf_counter()
    try:
        path = build()
    except Exception as error:  # noqa: BLE001 - one line: the render still works through numba's JIT
        print(f"mididdsp.native: could not build the compiled kernels ({type(error).__name__}: {error}); "
              "renders will compile them with numba's JIT instead", file=sys.stderr)
        return 1
    print(f"mididdsp.native: {len(KERNELS)} kernels compiled into {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
