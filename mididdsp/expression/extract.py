"""Audio + aligned MIDI -> per-note expression table (`mididdsp extract`).

Pipeline: audio (any rate/channels -> 16 kHz mono) -> f0 (CREPE) and A-weighted loudness -> frame-level synthesis
controls, either from a trained model's network (``controls="model"``: the controls the synthesizer would play,
which is what MIDI-DDSP measures expression on) or measured directly (``controls="analysis"``, see
:mod:`mididdsp.expression.analysis`) -> every MIDI track split into monophonic voices
(:func:`mididdsp.score.split_voices`) -> the six controls of every note (:mod:`mididdsp.expression.controls`)
-> a :class:`~mididdsp.expression.table.NoteExpression` with one row per note.

The audio is analysed as one monophonic line: with several voices sounding at once, every voice reads the same
frame controls, so the controls of overlapping notes describe the mixture, not the single note.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_MIDI_OVERRUN_S = 0.5  # MIDI may end this much after the audio (release tails, rounding); more is misaligned
# "mixed" (the default): the model's controls with the amplitude measured from the audio. Chosen by measurement
# on a SoundFont no model was trained on (docs/expression.md): the analysis reads the level-based controls best
# (peak position r 0.99 vs the model's 0.90), the model the timbre (attack noise).
CONTROL_SOURCES = ("mixed", "model", "analysis")
SOUNDING_DB = -60.0  # frames louder than this set the gain that puts measured amplitudes on the model's scale
# A recording is analysed at this level (the 90th percentile of its 32 ms RMS levels inside notes; the training
# corpus's recordings: median -18.8 dB, 90 % of them within -24.9 .. -13.2 dB) and its levels moved back after.
# The analysis has absolute floors (CREPE's -60 dB silence gate, the loudness and noise floors): a real recording
# 10 dB quieter than the corpus read attack noise 0.6-0.9 and, 20 dB quieter still, 1.0 on every note.
ANALYSIS_LEVEL_DB = -19.0
MAX_ANALYSIS_GAIN_DB = 60.0  # a near-silent recording is not raised further (its noise would only be louder)
MIN_CHANNEL_VOLUME = 1.0     # CC7 under this (a muted channel) is read as this


@dataclass
class Extraction:
    """What :func:`extract` measured: the table, and the frame signals it came from (for plots).

    ``features``: ``f0_hz``, ``confidence``, ``loudness_db`` [T]; ``controls``: synthesis controls [1, T, ...];
    both at the recording's own level. ``analysis_gain_db``: the gain the recording was analysed at
    (:func:`analysis_gain_db`).
    """

    table: Any
    features: dict
    controls: dict
    analysis_gain_db: float = 0.0


def analysis_gain_db(audio, score) -> float:
    """The gain (dB) that brings ``audio``'s level inside the score's notes (the 90th percentile of its 32 ms RMS
    levels) to :data:`ANALYSIS_LEVEL_DB`: a recording's overall gain (microphone, mixing) is not expression, so
    every recording is analysed at one level. 0 when no note has sound; at most :data:`MAX_ANALYSIS_GAIN_DB`."""
    import numpy as np
    import torch

    from mididdsp.dsp import HOP_SIZE, n_frames
    from mididdsp.pitch import frame_level_db

    signal = torch.as_tensor(audio, dtype=torch.float32).reshape(1, -1)
    frames = n_frames(signal.shape[-1])
    inside = _inside_notes([note for track in score.tracks for note in track.notes], frames)
    levels = frame_level_db(signal, torch.arange(frames) * HOP_SIZE)[0][inside]
    levels = levels[levels > -150.0]
    if levels.size == 0:
        return 0.0
    return float(min(ANALYSIS_LEVEL_DB - np.percentile(levels, 90), MAX_ANALYSIS_GAIN_DB))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", help="audio file (wav, flac, ogg, aiff; any rate and channel count)")
    parser.add_argument("--midi", required=True, help="MIDI file aligned with the audio (same time axis)")
    parser.add_argument("-o", "--output", required=True, help="expression table to write (.csv or .json)")
    parser.add_argument("--model", default=None,
                        help="model directory (default: the shipped synthesis coder, else the autoencoder)")
    parser.add_argument("--instrument", default=None,
                        help="instrument of the model (default: the MIDI's General MIDI program when the model "
                             "has it, e.g. program 40 -> violin, else the model's first)")
    parser.add_argument("--controls", choices=CONTROL_SOURCES, default="mixed",
                        help="mixed (default): the model's controls with the amplitude measured from the audio; "
                             "model: all from the model's network; analysis: all measured (no model needed)")
    parser.add_argument("--plot", default=None, help="also draw the notes, f0, loudness and controls to this PNG")
    parser.add_argument("--f0-model", choices=("tiny", "full"), default="tiny", help="CREPE size (default tiny)")
    parser.add_argument("--no-f0-refine", dest="f0_refine", action="store_false",
                        help="use CREPE's f0 as it is (by default it is refined by the waveform's period, which "
                             "reads vibrato at its true extent: mididdsp.pitch.refine_f0)")


def run(args: argparse.Namespace) -> int:
    from mididdsp.audio import load_audio
    from mididdsp.errors import MididdspError
    from mididdsp.score import read_midi

    output = Path(args.output)
    if output.suffix.lower() not in (".csv", ".json"):
        raise MididdspError(f"{args.output}: the expression table must end in .csv or .json")
    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        raise MididdspError(f"{args.plot}: the plot must end in .png")
    model = None
    if args.controls != "analysis":
        from mididdsp.models import load_model
        from mididdsp.resynth import DEFAULT_MODEL, PRETRAINED, _default_model

        # MIDI-DDSP measures expression on the synthesis coder's controls; the autoencoder when it is absent.
        model = load_model(args.model or _default_model(PRETRAINED / "synthesis_coder", DEFAULT_MODEL))
    audio = load_audio(args.audio)
    score = read_midi(args.midi)
    check_alignment(score, len(audio) / 16000.0, args.midi, args.audio)
    result = extract(audio, score, model, args.instrument, args.controls, args.f0_model, args.f0_refine)
    write_outputs(result, output, args.plot)
    print(f"wrote {output} ({len(result.table)} notes)" + (f" and {args.plot}" if args.plot else ""))
    return 0


def write_outputs(result: Extraction, output: str | Path, plot: str | Path | None = None) -> None:
    """Save the table to ``output`` (.csv/.json) and, if given, draw the PNG ``plot``: all or nothing.

    Both are rendered to temporary files next to their targets first; only when both succeeded are they renamed
    into place, so a failure in either leaves no output (and no temporary file) behind.
    """
    import contextlib

    from mididdsp.fileio import atomic_path

    output = Path(output)
    with contextlib.ExitStack() as stack:
        table_temp = stack.enter_context(atomic_path(output, suffix=output.suffix))
        plot_temp = stack.enter_context(atomic_path(plot, suffix=".png")) if plot is not None else None
        result.table.save(table_temp)
        if plot_temp is not None:
            from mididdsp.expression.plot import plot_expression

            plot_expression(plot_temp, result)


def check_alignment(score, audio_seconds: float, midi_name: str = "MIDI", audio_name: str = "audio") -> None:
    """One-line MididdspError if the score has no notes or ends more than 0.5 s after the audio."""
    from mididdsp.errors import MididdspError

    if not any(track.notes for track in score.tracks):
        raise MididdspError(f"{midi_name}: the MIDI file has no notes")
    last = max(note.end for track in score.tracks for note in track.notes)
    if last > audio_seconds + MAX_MIDI_OVERRUN_S:
        raise MididdspError(f"{midi_name}: notes run to {last:.2f} s but {audio_name} is {audio_seconds:.2f} s long; "
                            f"expected MIDI aligned with the audio (at most {MAX_MIDI_OVERRUN_S} s past its end)")


def model_controls(model, audio, f0_hz, loudness_db, instrument: int = 0, chunk_seconds: float = 20.0) -> dict:
    """Features [T] -> the model's synthesis controls [1, T, ...] (``DDSPAutoencoder.controls``)."""
    return model.controls(f0_hz, loudness_db, audio if model.encoder is not None else None, instrument,
                          chunk_seconds)


def mixed_controls(model, audio, f0_hz, loudness_db, instrument: int = 0, chunk_seconds: float = 20.0) -> dict:
    """The model's controls [1, T, ...] with its amplitude replaced by the one measured from the audio
    (:mod:`mididdsp.expression.analysis`), times the instrument's gain from the model's calibration
    (``measured_amplitude_gains``: the median ratio on its training notes), so the model's calibrated ranges still
    apply. Level-based controls (volume, fluctuation, peak position) then follow the audio itself; brightness and
    attack noise are the model's. A model calibrated before the gains existed gets this recording's median ratio
    over frames above ``SOUNDING_DB``."""
    import torch

    from mididdsp.models import model_metadata

    controls = model_controls(model, audio, f0_hz, loudness_db, instrument, chunk_seconds)
    measured = chunked_analysis_controls(audio, f0_hz, chunk_seconds)["amplitude"].clamp_min(1e-7)
    metadata = model_metadata(model)
    names = {int(index): name for name, index in (metadata.get("instruments") or {}).items()}
    gain = (metadata.get("measured_amplitude_gains") or {}).get(names.get(int(instrument)))
    if gain is None:
        sounding = loudness_db[None] > SOUNDING_DB
        gain = float((torch.log(controls["amplitude"].clamp_min(1e-7)) - torch.log(measured))[sounding].median()) \
            if sounding.any() else 0.0
    return {**controls, "amplitude": measured * math.exp(gain)}


def chunked_analysis_controls(audio, f0_hz, chunk_seconds: float = 20.0) -> dict:
    """:func:`analysis_controls` over pieces of the input (its STFT needs 8 frames of context), [1, T, ...]."""
    import torch

    from mididdsp.dsp import HOP_SIZE
    from mididdsp.expression.analysis import analysis_controls

    signal = torch.as_tensor(audio, dtype=torch.float32)
    frames = f0_hz.shape[0]
    chunk, context = max(1, int(chunk_seconds * 250)), 16
    pieces = []
    for first in range(0, frames, chunk):
        last = min(frames, first + chunk)
        start, stop = max(0, first - context), min(frames, last + context)
        piece_audio = signal[start * HOP_SIZE:(stop - 1) * HOP_SIZE + 1]
        controls = analysis_controls(piece_audio, f0_hz[start:stop])
        pieces.append({key: value[first - start:last - start] for key, value in controls.items()})
    return {key: torch.cat([piece[key] for piece in pieces], dim=0).unsqueeze(0) for key in pieces[0]}


def _inside_notes(notes, frames: int):
    """[frames] bool: the 250 Hz frames any of ``notes`` covers (chords and overlaps allowed; at least one frame a
    note, as :func:`mididdsp.score.note_frames` counts them)."""
    import numpy as np

    from mididdsp.dsp import FRAME_RATE

    inside = np.zeros(frames, bool)
    for note in notes:
        first = math.floor(note.start * FRAME_RATE + 0.5)
        inside[max(first, 0):max(math.floor(note.end * FRAME_RATE + 0.5), first + 1)] = True
    return inside


def channel_volume_db(score, tracks) -> "np.ndarray":
    """The gain (dB) each table row's track gets from its channel volume (CC7) in ``render``: General MIDI's
    ``40 log10(cc7 / 127)``, the median over the frames of the track's notes; -4.15 dB for a track without CC7 (the
    default, 100). ``extract`` takes it out of the level offset, so a table played back with the same file sounds
    at the recording's level: channel volume is mixing, like a recording's gain. Expression (CC11) is not taken
    out: it is what the table describes, so a table extracted with a file's CC11 swells carries them, and a render
    of it with the same CC11 plays them twice (render such a table with the notes alone).
    ``tracks``: [rows] track indices. Returns [rows] float64."""
    import numpy as np

    from mididdsp.dsp import FRAME_RATE

    volume = np.zeros(len(score.tracks))
    for index, track in enumerate(score.tracks):
        frames = math.floor(max((n.end for n in track.notes), default=0.0) * FRAME_RATE + 0.5) + 1
        cc7 = track.control_frames(frames)["cc7"]
        inside = _inside_notes(track.notes, frames)
        level = np.maximum(cc7[inside] if inside.any() else cc7, MIN_CHANNEL_VOLUME)
        volume[index] = float(np.median(40.0 * np.log10(level / 127.0)))
    return volume[np.asarray(tracks, int)]


def expression_table(score, controls: dict, instrument: str | list[str], ranges: dict | None = None,
                     references: dict | None = None):
    """Frame controls [1, T, ...] + the score -> NoteExpression, one row per note of every track's voices.

    ``instrument``: one name for all tracks, or one per track; ``ranges``: the controls' scales (a model's
    ``expression_ranges``; default the fixed ones); ``references``: the instruments' reference levels in dB (a
    model's ``reference_levels_db``; default the middle of the volume range). Each track's levels are stored
    relative to it (``level_offset_db``: its median note level minus the reference), so the recording's overall
    gain moves that column and nothing else. Notes that get no frame (beyond the end of the controls, or hidden
    under the next onset) read 0 on every scaled control, with a warning.
    """
    import warnings

    import torch

    from mididdsp.expression.controls import (CONTROL_NAMES, LEVEL_OFFSET, PHYSICAL_NAMES, control_ranges, level_offset,
                                              note_expression, reference_level, relative_levels)
    from mididdsp.expression.table import INFO_COLUMNS, SCALED_OF, NoteExpression
    from mididdsp.score import note_frames, split_voices

    frames = controls["f0_hz"].shape[1]
    voices = [(t, v, notes) for t, track in enumerate(score.tracks) for v, notes in enumerate(split_voices(track.notes))]
    names = [instrument] * len(score.tracks) if isinstance(instrument, str) else list(instrument)
    columns: dict[str, list] = {name: [] for name in (*INFO_COLUMNS, *CONTROL_NAMES, *PHYSICAL_NAMES, LEVEL_OFFSET)}
    ranges = control_ranges(ranges)
    if not voices:
        return NoteExpression(columns, ranges)
    n_notes = max(len(notes) for _, _, notes in voices)
    note_index = torch.stack([torch.from_numpy(note_frames(notes, frames)["note_index"]) for _, _, notes in voices])
    pitch = torch.zeros(len(voices), n_notes)
    for row, (_, _, notes) in enumerate(voices):
        pitch[row, :len(notes)] = torch.tensor([float(n.pitch) for n in notes])
    batch = {key: value.expand(len(voices), *value.shape[1:]) for key, value in controls.items()}
    with torch.no_grad():
        values = note_expression(batch, note_index, pitch, n_notes, ranges=ranges)
        tracks = torch.tensor([t for t, _, _ in voices])
        offsets = torch.zeros(len(voices), 1)
        for t in tracks.unique().tolist():
            rows = tracks == t
            reference = reference_level(ranges, references, names[t])
            offsets[rows] = level_offset(values["volume_db"][rows], values["present"][rows], reference)
        values = relative_levels(values, offsets, ranges)
    missing = 0
    for row, (t, v, notes) in enumerate(voices):
        for i, note in enumerate(notes):
            for key, value in zip(INFO_COLUMNS, (t, v, i, note.start, note.end, note.pitch, note.velocity, names[t])):
                columns[key].append(value)
            present = bool(values["present"][row, i])
            missing += not present
            for name in CONTROL_NAMES:
                columns[name].append(float(values[name][row, i]) if name in values else 0.0)
            columns[LEVEL_OFFSET].append(float(values[LEVEL_OFFSET][row, i]))
            for name in PHYSICAL_NAMES:
                if name in values and present:
                    columns[name].append(float(values[name][row, i]))
                else:  # no frames or no such input: the physical value of a 0 control
                    scaled = SCALED_OF.get(name)
                    columns[name].append(ranges[scaled][0] if scaled else 0.0)
    if missing:
        warnings.warn(f"{missing} note(s) have no frames in the audio (past its end or hidden by the next onset); "
                      f"their controls are set to 0", stacklevel=2)
    order = sorted(range(len(columns["start"])), key=lambda r: (columns["track"][r], columns["start"][r],
                                                                 columns["voice"][r]))
    return NoteExpression({key: [value[r] for r in order] for key, value in columns.items()}, ranges)


def extract(audio, score, model=None, instrument: str | None = None, controls: str = "mixed",
            f0_model: str = "tiny", f0_refine: bool = True, midi_volume: bool = True) -> Extraction:
    """16 kHz mono audio [samples] + aligned Score -> :class:`Extraction` (table + frame signals).

    ``controls="mixed"`` (:func:`mixed_controls`) and ``"model"`` need ``model`` (a loaded DDSP autoencoder); the
    table's instrument column is the model instrument used (``instrument``, else :func:`score_instrument`).
    ``controls="analysis"`` needs no model; the instrument
    column is ``instrument`` or each track's General MIDI program name. ``f0_refine``: CREPE's f0 refined by
    :func:`mididdsp.pitch.refine_f0` (default; CREPE alone reads vibrato 0.64-0.93 of its extent).
    ``midi_volume``: take each track's channel volume (CC7) out of its level offset (default), as a recording's
    gain is (:func:`channel_volume_db`); False for audio made without it (e.g. the generator's own output).
    """
    import numpy as np

    from mididdsp.errors import MididdspError
    from mididdsp.expression.controls import LEVEL_OFFSET
    from mididdsp.models import model_metadata
    from mididdsp.resynth import analyse, instrument_id
    from mididdsp.score import gm_program_name

    if controls not in CONTROL_SOURCES:
        raise MididdspError(f"controls {controls!r}: expected one of {CONTROL_SOURCES}")
    gain_db = analysis_gain_db(audio, score)
    audio = audio * math.pow(10.0, gain_db / 20.0)
    f0_hz, confidence, loudness_db = analyse(audio, f0_model, refine=f0_refine)
    features = {"f0_hz": f0_hz, "confidence": confidence, "loudness_db": loudness_db - gain_db}
    if controls != "analysis":
        if model is None:
            raise MididdspError(f"controls='{controls}' needs a model; pass one (or --model DIR), or use 'analysis'")
        ids, name = instrument_id(model, instrument or score_instrument(model, score))
        source = mixed_controls if controls == "mixed" else model_controls
        frame_controls = source(model, audio, f0_hz, loudness_db, ids)
        names: str | list[str] = name
        ranges = model_ranges(model)
        references = model_metadata(model).get("reference_levels_db")
    else:
        frame_controls = chunked_analysis_controls(audio, f0_hz)
        names = instrument or [gm_program_name(t.program).lower() for t in score.tracks]
        ranges = references = None
    # the table is read at the analysis level (its dB floors then sit as far under every recording's notes),
    # and the gain leaves it through the level offset alone; the frame controls go back to the recording's level
    table = expression_table(score, frame_controls, names, ranges, references)
    if len(table):
        channel_db = channel_volume_db(score, np.asarray(table.track)) if midi_volume else 0.0
        table.set(LEVEL_OFFSET, table.level_offset_db - gain_db - channel_db)
    back = math.pow(10.0, -gain_db / 20.0)
    frame_controls = {key: value * back if key in ("amplitude", "noise_magnitudes") else value
                      for key, value in frame_controls.items()}
    return Extraction(table, features, frame_controls, gain_db)


def score_instrument(model, score) -> str | None:
    """The model instrument named by the General MIDI program of the score's first track with notes (program 40
    -> ``violin``), or None (the model's first instrument) when the model has no such instrument."""
    from mididdsp.models import model_metadata
    from mididdsp.score import gm_program_name

    known = model_metadata(model).get("instruments") or {}
    track = next((t for t in score.tracks if t.notes), None)
    if track is None or track.is_drum:
        return None
    name = gm_program_name(track.program).lower()
    return name if name in known else None


def model_ranges(model) -> dict | None:
    """The model's calibrated ``expression_ranges`` (:mod:`mididdsp.expression.calibrate`), or None."""
    from mididdsp.models import model_metadata

    return model_metadata(model).get("expression_ranges")
