"""The ``mididdsp render`` and ``mididdsp instruments`` commands over :mod:`mididdsp.render`'s model API: the options
of a file's render, the one path that renders a file and writes its outputs (a single file, and every file of a
batch: :mod:`mididdsp.batch`), and the commands themselves.

    mididdsp render song.mid -o song.wav [--instrument NAME] [--seed N] [--temperature T] ...
    mididdsp render songs/ -o out/ [--workers N]        # several files or folders: a batch (mididdsp.batch)
    mididdsp instruments [--model DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from mididdsp.render import MidiModel, Rendered, load_model

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
EXIT_STATUS_HELP = ("Several files, or folders (searched recursively for .mid/.midi), render as a batch into the "
                    "folder -o: each output keeps its input's relative path, a re-run skips what is done "
                    "(--overwrite renders it again), and OUT/render-report.csv has one row per input. "
                    "Exit status: 0 when every input is ok or skipped, 1 when any failed (or on bad options).")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.split()[-1]
    parser.set_defaults(_render_command=command)
    parser.add_argument("--model", default=None, help="MIDI model directory (default: the shipped model)")
    if command == "instruments":
        return
    parser.epilog = EXIT_STATUS_HELP
    parser.add_argument("midi", nargs="+", metavar="MIDI", help="MIDI file(s) (.mid), or folders of them")
    parser.add_argument("-o", "--output", required=True,
                        help="audio file to write (.wav, .flac or .ogg); with several inputs or a folder: a folder")
    parser.add_argument("--instrument", default=None, help="play every track with this instrument")
    parser.add_argument("--track-instrument", action="append", default=[], metavar="N=NAME",
                        help="play track N (0-based, as listed by the table's track column) with NAME; repeatable")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior's sampling and the noise (default 0): "
                                                            "the same seed gives the same audio, bit for bit")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="the prior's sampling temperature (0: its most likely expression; default 1)")
    parser.add_argument("--transpose", type=int, default=0, help="semitones to transpose every track")
    parser.add_argument("--tempo-scale", type=float, default=1.0, help="play F times as fast (default 1)")
    parser.add_argument("--expression-out", default=None,
                        help="write the note expression used to this CSV/JSON (a batch: a folder of CSV files)")
    parser.add_argument("--expression-in", default=None,
                        help="render with this note expression table (CSV/JSON, e.g. from --expression-out, edited); "
                             "one file only")
    parser.add_argument("--stems", default=None, help="also write one file per track into this folder (a batch: "
                                                      "one subfolder per input)")
    parser.add_argument("--no-reverb", dest="reverb", action="store_false", help="leave the reverb out")
    parser.add_argument("--sample-rate", type=int, default=16000, help="output sample rate (default 16000)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    batch = parser.add_argument_group("batch (several inputs or a folder)")
    batch.add_argument("--format", choices=("wav", "flac", "ogg"), default="wav", help="output format (default wav)")
    batch.add_argument("--workers", type=int, default=None,
                       help="processes on this machine (default: the cores this process may use); with --engine ray: "
                            "actors (default: the cluster's CPUs)")
    batch.add_argument("--overwrite", action="store_true", help="render every input again, even where its output "
                                                                "exists")
    batch.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local processes (default), or Ray tasks (pip install mididdsp[ray])")
    batch.add_argument("--address", default=None,
                       help="the Ray cluster to join (auto, or HOST:PORT); default: start a local Ray instance")


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    """What a render of one MIDI file depends on besides the model: every file of a batch gets the same."""

    instrument: str | None = None
    track_instruments: tuple[tuple[int, str], ...] = ()   # (track, instrument name) pairs
    seed: int = 0
    temperature: float = 1.0
    transpose: int = 0
    tempo_scale: float = 1.0
    reverb: bool = True
    sample_rate: int = 16000

    def check(self) -> "RenderOptions":
        """MididdspError naming the first value out of range; else self."""
        from mididdsp.errors import MididdspError

        if not 8000 <= self.sample_rate <= 192000:
            raise MididdspError(f"--sample-rate {self.sample_rate}: expected 8000..192000 Hz")
        if not (math.isfinite(self.tempo_scale) and 0.05 <= self.tempo_scale <= 20):
            raise MididdspError(f"--tempo-scale {self.tempo_scale}: expected a number in 0.05..20")
        if not -48 <= self.transpose <= 48:
            raise MididdspError(f"--transpose {self.transpose}: expected -48..48 semitones")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise MididdspError(f"--temperature {self.temperature}: expected a number >= 0")
        return self

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RenderOptions":
        return cls(args.instrument, tuple(sorted(_parse_track_instruments(args.track_instrument).items())),
                   args.seed, args.temperature, args.transpose, args.tempo_scale, args.reverb,
                   args.sample_rate).check()


@dataclasses.dataclass
class FileRender:
    """What a render of one file made: seconds of audio, notes played, each track's instrument (None: drums or
    empty), and the messages for the user (instrument choices, clipping)."""

    seconds: float
    notes: int
    instruments: list
    messages: list


def read_score(midi: str | Path, options: RenderOptions, data: bytes | None = None):
    """The score of ``midi`` as ``options`` play it (transposed, stretched); MididdspError naming the file when it
    has nothing to render or ``options`` name a track it lacks. ``data``: the file's bytes, already read."""
    from mididdsp.errors import MididdspError
    from mididdsp.score import read_midi

    score = read_midi(midi, data)
    if options.transpose:
        score = score.transposed(options.transpose)
    if options.tempo_scale != 1.0:
        score = score.stretched(1.0 / options.tempo_scale)
    if not any(t.notes and not t.is_drum for t in score.tracks):
        raise MididdspError(f"{midi}: no melodic notes to render (only drums or empty tracks)")
    for track_number, _ in options.track_instruments:
        if not 0 <= track_number < len(score.tracks):
            raise MididdspError(f"{midi}: --track-instrument {track_number}=...: the file has tracks "
                                f"0..{len(score.tracks) - 1}")
    return score


def render_score(model: MidiModel, score, output: Path, options: RenderOptions, stems: str | Path | None = None,
                 expression_out: str | Path | None = None, expression_in: str | Path | None = None,
                 progress: bool = False) -> FileRender:
    """Render ``score`` with ``options`` and write the mix to ``output`` (its suffix picks the format), the stems
    into the folder ``stems`` and the expression table to ``expression_out``: all written, or none. The one path of
    ``mididdsp render``, for one file and for every file of a batch (so both give the same bits)."""
    from mididdsp.errors import MididdspError
    from mididdsp.parallel import threads

    per_track = dict(options.track_instruments)
    # the voices in forked copies of this process, one per core (a batch worker has one: none), not on threads:
    # copies do not contend for the interpreter (mididdsp.parallel)
    processes = threads()
    if expression_in:
        from mididdsp.expression.table import NoteExpression

        expression = NoteExpression.load(expression_in, ranges=model.ranges)
    else:
        expression = model.expression(score, options.seed, options.temperature, options.instrument, per_track)
    try:
        result = model.render(score, expression, options.seed, options.temperature, options.instrument, per_track,
                              options.reverb, options.sample_rate, progress=progress, stems=bool(stems),
                              processes=processes)
    except MididdspError as error:
        if expression_in:
            raise MididdspError(f"{expression_in}: {error}") from None
        raise
    _write_all(result, output, stems, expression_out, expression)
    instruments, _ = model.track_instruments(score, options.instrument, per_track)
    return FileRender(len(result.audio) / result.sample_rate, len(expression), instruments, result.messages)


def _parse_track_instruments(values: list[str]) -> dict[int, str]:
    from mididdsp.errors import MididdspError

    out = {}
    for value in values:
        number, sep, name = value.partition("=")
        if not sep or not number.strip().isdigit() or not name.strip():
            raise MididdspError(f"--track-instrument {value!r}: expected N=NAME, e.g. 0=violin")
        out[int(number)] = name.strip()
    return out


def is_batch(args: argparse.Namespace) -> bool:
    """Several inputs, a folder, or an output without an audio suffix (a folder): a batch (:mod:`mididdsp.batch`)."""
    output = Path(args.output)
    return (len(args.midi) > 1 or any(Path(m).is_dir() for m in args.midi) or output.is_dir()
            or output.suffix == "")


def run(args: argparse.Namespace) -> int:
    from mididdsp.errors import MididdspError

    if getattr(args, "_render_command", "render") == "instruments":
        return list_instruments(args)
    if is_batch(args):
        from mididdsp import batch

        return batch.run(args)
    output = Path(args.output)
    if output.suffix.lower() not in AUDIO_SUFFIXES:
        raise MididdspError(f"{output}: the output must end in .wav, .flac or .ogg")
    options = RenderOptions.from_args(args)
    for path in (args.expression_out,):
        if path is not None and Path(path).suffix.lower() not in (".csv", ".json"):
            raise MididdspError(f"{path}: the expression table must end in .csv or .json")
    midi = args.midi[0]
    score = read_score(midi, options)
    model = load_model(args.model)
    done = render_score(model, score, output, options, args.stems, args.expression_out, args.expression_in,
                        progress=not args.quiet and sys.stderr.isatty())
    if not args.quiet:
        for message in done.messages:
            print(message, file=sys.stderr)
        print(f"wrote {output} ({done.seconds:.1f} s, {done.notes} notes)", file=sys.stderr)
    return 0


def _write_all(result: Rendered, output: Path, stems: str | Path | None, expression_out: str | Path | None,
               expression) -> None:
    """The mix, the stems and the expression table: all written, or none (temporary files renamed at the end, the
    mix last: a batch takes an existing mix for a finished file)."""
    import contextlib

    from mididdsp.audio import save_audio
    from mididdsp.fileio import atomic_path

    with contextlib.ExitStack() as stack:
        temp = stack.enter_context(atomic_path(output, suffix=output.suffix))
        save_audio(temp, result.audio, result.sample_rate)
        if stems:
            folder = Path(stems)
            for track, audio in sorted(result.stems.items()):
                path = folder / f"track_{track:02d}{output.suffix}"
                save_audio(stack.enter_context(atomic_path(path, suffix=output.suffix)), audio, result.sample_rate)
        if expression_out:
            path = Path(expression_out)
            expression.save(stack.enter_context(atomic_path(path, suffix=path.suffix)))


def list_instruments(args: argparse.Namespace) -> int:
    from mididdsp.score import gm_program_name

    model = load_model(args.model)
    print("instruments: " + ", ".join(sorted(model.instruments)))
    print("General MIDI program -> instrument:")
    for program in range(128):
        name, how = model.instrument_for(program)
        print(f"  {program:3d} {gm_program_name(program):<28} {name}" + ("" if how == "exact" else f"  ({how.split(' (')[0]})"))
    return 0
