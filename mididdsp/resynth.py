"""Audio -> audio through a DDSP autoencoder: resynthesis and timbre transfer (`mididdsp resynth`).

Pipeline: load (any rate/channels) -> 16 kHz mono -> f0 (CREPE) + loudness -> optional adjustments (pitch shift,
loudness shift, autotune, quieting of note-less parts, automatic matching to the model's training statistics) ->
network -> controls -> streamed synthesis. Work is done in chunks of frames with overlapping context, so memory
stays bounded for any input length.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

PRETRAINED = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = PRETRAINED / "autoencoder"
SHIPPED_CODER = PRETRAINED / "synthesis_coder"  # the extractor of `mididdsp extract`, and the MIDI models' teacher


@dataclass
class ResynthOptions:
    """Knobs of the DDSP timbre-transfer demo. Units: octaves, dB, 0..1."""

    instrument: str | None = None   # name from the model's instruments (default: its first)
    pitch_shift: float = 0.0        # octaves, added after automatic adjustment
    loudness_shift: float = 0.0     # dB, added after automatic adjustment
    autotune: float = 0.0           # 0: f0 as detected; 1: snapped to the nearest semitone
    threshold: float = 0.5          # CREPE confidence at or above which a frame belongs to a note
    quiet: float = 20.0             # dB of attenuation for frames that belong to no note
    adjust: bool = True             # move pitch (whole octaves) and output level to the instrument's training data
    reverb: bool = True
    f0_model: str = "tiny"
    chunk_seconds: float = 20.0
    f0_refine: bool = False         # drive the model with CREPE's f0 refined by mididdsp.pitch.refine_f0
    loudness_passes: int = 2        # rounds of closed-loop loudness correction (0: the network's controls as is)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="audio file (wav, flac, ogg, aiff; any rate and channel count)")
    parser.add_argument("-o", "--output", required=True, help="output audio file (.wav or .flac)")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped autoencoder)")
    parser.add_argument("--instrument", default=None, help="instrument of the model to play (default: its first)")
    parser.add_argument("--pitch-shift", type=float, default=0.0, help="octaves to shift the pitch by (default 0)")
    parser.add_argument("--loudness-shift", type=float, default=0.0, help="dB to shift the loudness by (default 0)")
    parser.add_argument("--autotune", type=float, default=0.0, help="0..1, pull f0 toward the nearest semitone")
    parser.add_argument("--threshold", type=float, default=0.5, help="0..1, CREPE confidence for a note (default 0.5)")
    parser.add_argument("--quiet", type=float, default=20.0, help="dB of attenuation where no note is detected")
    parser.add_argument("--no-adjust", action="store_true",
                        help="do not match the input's pitch/loudness to the model's training data")
    parser.add_argument("--no-reverb", action="store_true", help="leave out the model's learned reverb")
    parser.add_argument("--sample-rate", type=int, default=16000, help="output sample rate in Hz (default 16000)")
    parser.add_argument("--f0-model", choices=("tiny", "full"), default="tiny", help="CREPE size (default tiny)")
    parser.add_argument("--f0-refine", action="store_true",
                        help="refine CREPE's f0 by the waveform's period (vibrato at its true size; held-out "
                             "spectral loss 5.60 -> 5.50 with the shipped autoencoder)")
    parser.add_argument("--loudness-passes", type=int, default=2,
                        help="rounds of closed-loop loudness correction: render, measure, correct each frame's "
                             "gain (default 2; 0 turns it off; docs/RESULTS.md)")


def run(args: argparse.Namespace) -> int:
    from mididdsp.audio import load_audio, save_audio
    from mididdsp.errors import MididdspError
    from mididdsp.models import load_model

    for name, value, low, high in (("--autotune", args.autotune, 0, 1), ("--threshold", args.threshold, 0, 1),
                                   ("--quiet", args.quiet, 0, 120), ("--pitch-shift", args.pitch_shift, -4, 4),
                                   ("--loudness-shift", args.loudness_shift, -60, 60),
                                   ("--sample-rate", args.sample_rate, 4000, 192000),
                                   ("--loudness-passes", args.loudness_passes, 0, 10)):
        if not low <= value <= high:
            raise MididdspError(f"{name} {value} is out of range; expected {low} .. {high}")
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".wav", ".flac"):
        raise MididdspError(f"{args.output}: output must end in .wav or .flac")
    model = load_model(args.model or _default_model())
    audio = load_audio(args.input)
    options = ResynthOptions(args.instrument, args.pitch_shift, args.loudness_shift, args.autotune, args.threshold,
                             args.quiet, not args.no_adjust, not args.no_reverb, args.f0_model,
                             f0_refine=args.f0_refine, loudness_passes=args.loudness_passes)
    output = resynthesize(audio, model, options)
    if args.sample_rate != 16000:
        from mididdsp.audio import resample
        output = resample(output, 16000, args.sample_rate)
    save_audio(args.output, output, args.sample_rate)
    print(f"wrote {args.output} ({len(output) / args.sample_rate:.1f} s)")
    return 0


def _default_model(*preferred: Path) -> Path:
    """The first installed model of ``preferred`` (default: the shipped autoencoder); ModelError if none is."""
    from mididdsp.errors import ModelError

    candidates = preferred or (DEFAULT_MODEL,)
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ModelError(f"{candidates[-1]}: the default model is not installed; pass --model DIR")


def instrument_id(model, name: str | None) -> tuple[int, str]:
    """Resolve an instrument name of ``model`` (its ``metadata['instruments']``) to its embedding id."""
    from mididdsp.errors import MididdspError

    from mididdsp.models import model_metadata

    instruments: dict[str, int] = model_metadata(model).get("instruments") or {"default": 0}
    if name is None:
        name = min(instruments, key=instruments.get)
    if name not in instruments:
        raise MididdspError(f"instrument {name!r} is not in this model; it has: {', '.join(sorted(instruments))}")
    return instruments[name], name


def _in_chunks(function, signal, n_total_frames: int, chunk_frames: int, context_frames: int, hop: int):
    """Apply ``function(audio_piece) -> tuple of [frames, ...] tensors`` over pieces of ``chunk_frames`` frames
    with ``context_frames`` of audio context on each side, and join the central frames of each result."""
    import torch

    results = []
    for first in range(0, n_total_frames, chunk_frames):
        last = min(n_total_frames, first + chunk_frames)
        start = max(0, first - context_frames)
        piece = signal[start * hop:min(signal.shape[-1], (last + context_frames) * hop)]
        results.append([value[first - start:last - start] for value in function(piece)])
    return tuple(torch.cat(parts, dim=0) for parts in zip(*results))


def analyse(audio, f0_model: str = "tiny", chunk_seconds: float = 20.0, refine: bool = False):
    """16 kHz mono audio [samples] -> (f0_hz, confidence, loudness_db), float32 tensors [frames].

    Computed in pieces with 1 s of context on each side (CREPE's windows, its Viterbi path and the STFT frames
    settle within it), so memory does not grow with the input's length. ``refine``: CREPE's f0 refined by
    :func:`mididdsp.pitch.refine_f0` (pitch deviations such as vibrato read at their true size).
    """
    import torch

    from mididdsp.dsp import HOP_SIZE, compute_loudness, n_frames
    from mididdsp.pitch import compute_f0, refine_f0

    signal = torch.as_tensor(audio, dtype=torch.float32)

    def features(piece):
        f0_hz, confidence = compute_f0(piece, model=f0_model)
        if refine:
            f0_hz = refine_f0(piece, f0_hz)
        return f0_hz, confidence, compute_loudness(piece)

    return _in_chunks(features, signal, n_frames(signal.shape[-1]), max(1, int(chunk_seconds * 250)), 250, HOP_SIZE)


def adjust_features(f0_hz, confidence, loudness_db, options: ResynthOptions, statistics: dict | None):
    """Apply the timbre-transfer adjustments to [frames] features; returns new (f0_hz, loudness_db).

    Note frames are those with confidence >= ``threshold``. With ``adjust`` and statistics of the instrument
    (``pitch_midi.mean``, ``loudness_db.mean`` of its training data), the pitch moves by the whole number of octaves
    that brings the input's mean note pitch closest to the instrument's, and the loudness by the difference of the
    mean note loudness. The network's conditioning is level-free (:mod:`mididdsp.synthesis.autoencoder`), so a
    loudness shift changes only the output level. Then the user's shifts, autotune and quieting are applied.
    """
    import torch

    from mididdsp.dsp import hz_to_midi, midi_to_hz

    notes = confidence >= options.threshold
    midi = hz_to_midi(f0_hz.clamp_min(1.0))
    octaves, decibels = options.pitch_shift, options.loudness_shift
    if options.adjust and statistics and notes.any():
        pitch_mean = statistics.get("pitch_midi", {}).get("mean")
        loudness_mean = statistics.get("loudness_db", {}).get("mean")
        if pitch_mean is not None:
            octaves += round((pitch_mean - midi[notes].mean().item()) / 12.0)
        if loudness_mean is not None:
            decibels += loudness_mean - loudness_db[notes].mean().item()
    midi = midi + 12.0 * octaves
    if options.autotune > 0:
        midi = midi + options.autotune * (torch.round(midi) - midi)
    loudness = loudness_db + decibels
    loudness = torch.where(notes, loudness, loudness - options.quiet).clamp(-80.0, 0.0)
    return midi_to_hz(midi).clamp(20.0, 7900.0), loudness


def resynthesize(audio, model, options: ResynthOptions | None = None):
    """16 kHz mono numpy audio -> resynthesised 16 kHz mono numpy audio of the same length."""
    from mididdsp.models import model_metadata

    options = options or ResynthOptions()
    instrument, name = instrument_id(model, options.instrument)
    statistics = (model_metadata(model).get("statistics") or {}).get(name)
    f0_hz, confidence, loudness_db = analyse(audio, options.f0_model, options.chunk_seconds, options.f0_refine)
    f0_hz, loudness_db = adjust_features(f0_hz, confidence, loudness_db, options, statistics)

    return synthesize_from_features(model, f0_hz, loudness_db, audio, instrument, options.reverb,
                                    options.chunk_seconds, loudness_passes=options.loudness_passes)


def synthesize_from_features(model, f0_hz, loudness_db, audio=None, instrument: int = 0, reverb: bool = True,
                             chunk_seconds: float = 20.0, n_samples: int | None = None, loudness_passes: int = 2):
    """Model network + streamed synthesis from [frames] features -> numpy float32 audio [n_samples].

    ``audio`` (16 kHz [samples]) is needed only by models with an audio encoder. The network runs on pieces of
    ``chunk_seconds`` with 2 s of context on each side, so memory does not grow with the length.
    ``loudness_passes``: rounds of closed-loop loudness correction (:meth:`mididdsp.dsp.DDSPSynth.correct_loudness`)
    so that the output reads ``loudness_db`` at onsets and releases too; 0 for the network's controls as they are.
    """
    import numpy as np
    import torch

    from mididdsp.dsp import HOP_SIZE, StreamingRenderer

    n_samples = n_samples or (len(audio) if audio is not None else (f0_hz.shape[0] - 1) * HOP_SIZE)
    controls = model.controls(f0_hz, loudness_db, audio, instrument, chunk_seconds, reverb)
    ids = torch.tensor([instrument])
    generator = torch.Generator().manual_seed(0)
    noise = None
    if loudness_passes > 0:
        # One excitation for the measuring renders and the output, so that the output reads what was measured.
        noise = torch.rand(1, n_samples + 4 * HOP_SIZE, generator=generator) * 2 - 1
        controls = model.synth.correct_loudness(controls, loudness_db[None].to(controls["amplitude"]), n_samples, ids,
                                                reverb, noise, loudness_passes)
    stream = StreamingRenderer(model.synth, ids, reverb, noise=noise, generator=generator)
    chunk = max(1, int(chunk_seconds * 250))
    pieces = []
    with torch.inference_mode():
        for first in range(0, f0_hz.shape[0], chunk):
            pieces.append(stream.push({key: value[:, first:first + chunk] for key, value in controls.items()}))
        pieces.append(stream.finish(n_samples))
    return torch.cat(pieces, dim=1)[0].numpy().astype(np.float32)
