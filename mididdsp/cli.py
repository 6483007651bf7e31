"""Command line: argument parsing and error reporting only.

Every subcommand lives in the module that implements it, which provides ``configure_parser(parser)`` and
``run(args) -> int``. This file only lists them, so importing the CLI stays cheap (torch and friends are imported
by the command that needs them, not by ``mididdsp --help``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("mididdsp.render_command", "render a MIDI file to audio with a MIDI model (expression prior + "
                                          "generator)"),
    "instruments": ("mididdsp.render_command", "list a MIDI model's instruments and the General MIDI program table"),
    "edit": ("mididdsp.editor.command", "edit a performance in the browser: a local web page over the render API"),
    "demo": ("mididdsp.demo", "play a bundled example as another instrument (--dsp: a phrase from the DSP core)"),
    "prepare": ("mididdsp.datasets.prepare", "turn audio (+MIDI) into feature shards for training"),
    "corpus": ("mididdsp.datasets.corpus", "render an expressive SoundFont training corpus"),
    "resynth": ("mididdsp.resynth", "resynthesize audio through a DDSP autoencoder (timbre transfer)"),
    "extract": ("mididdsp.expression.extract", "per-note expression table from audio + aligned MIDI"),
    "calibrate": ("mididdsp.expression.calibrate", "measure a model's expression scales on its training notes"),
    "teacher": ("mididdsp.datasets.teacher", "cache a synthesis coder's controls and note expression for training"),
    "train": ("mididdsp.training.train", "train a model from a YAML config"),
    "export": ("mididdsp.training.train", "export a training run's checkpoint as a model directory"),
    "eval": ("mididdsp.evaluate", "measure a model: `eval controls` (generator), `eval prior` (expression prior)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mididdsp", description="Expressive MIDI-to-audio synthesis with DDSP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        importlib.import_module(module_name).configure_parser(command_parser)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings a command raises are for the user: one ``warning: ...`` line, no source location."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    import warnings

    from mididdsp.errors import MididdspError

    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except MididdspError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mididdsp instruments | head`: the reader left; exit quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    finally:
        warnings.showwarning = shown


def entry_point() -> None:
    """The ``mididdsp`` command (console script and ``python -m mididdsp``): :func:`main`, then
    :func:`exit_without_teardown`. ``main()`` itself exits normally (tests call it in process)."""
    from mididdsp._malloc import retain_freed_memory

    retain_freed_memory()
    try:
        code = main()
    except SystemExit as stop:  # argparse's --help and usage errors; mapped as the interpreter maps them
        code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    exit_without_teardown(code)


def exit_without_teardown(code: int) -> None:
    """End the process with ``code`` but skip the interpreter's teardown: clearing torch's, numba's and scipy's
    modules took 0.35 s of every command (a one-note render 1.94 s as a whole process, 1.54 s without). What the
    teardown owes is done first, in its order: threading's own shutdown (its exit hooks, which tell idle thread-pool
    workers to leave, e.g. those of the editor's event loop, then the join of every non-daemon thread: joining
    without the hooks waited for ever on an idle pool worker), then the ``atexit`` handlers (logging, temporary
    files, multiprocessing's finalizers, e.g. the semaphores tqdm makes in a spawned batch worker, which the
    resource tracker would otherwise report as leaked; Lightning and Ray register theirs there too), then the
    standard streams are flushed."""
    import atexit
    import os
    import threading

    if threading.current_thread() is threading.main_thread() and hasattr(threading, "_shutdown"):
        threading._shutdown()  # what the interpreter's finalisation calls first
    else:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`mididdsp instruments | head`)
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
