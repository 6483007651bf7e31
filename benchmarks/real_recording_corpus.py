"""A real (non-SoundFont) recording as a corpus folder, so that the held-out measurements run on it (issue 25).

    python benchmarks/real_recording_corpus.py [AUDIO] -o data/heldout/real_music21 [--instruments all]
    python benchmarks/eval_levels.py data/heldout/real_music21
    python benchmarks/eval_realism.py data/heldout/real_music21 --per-instrument 1 --no-ablations

AUDIO defaults to the one acoustic recording this machine has offline: music21's ``audioSearch/test_audio.wav``
(20 s, a monophonic line of about 30 notes played by a person; part of music21's test data, not of the
corpus parts we train on, so it is evaluation data by the project's rule).

It has no MIDI, so its notes are transcribed from its f0 (full CREPE, 250 Hz): a note is a run of confidently
voiced frames (confidence >= 0.5, level within 45 dB of the loudest frame) that stay within 0.5 semitone of one
equal-tempered pitch for at least 80 ms (a dip of confidence inside a held note, the same pitch resumed within 60 ms without a
3 dB rise, does not split it); the slides and breaths between notes are left out. The velocity is
read from the note's peak level by General MIDI's law (-40 dB per decade of velocity, loudest note 127), so
that the flat FluidR3 rendering hears the same dynamics a sampler user would write.

Our instruments are 13 sustained ones and the recording is none of them for sure, so the folder holds one
recording per instrument asked for (the same audio and notes, the MIDI's program set to the instrument): the
extraction measurements then cover every instrument model a user could pick, and the worst is reported.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CONFIDENCE = 0.5
RANGE_DB = 45.0          # frames quieter than this under the loudest frame are rests
MIN_NOTE_S = 0.08
PITCH_TOLERANCE = 0.5    # semitones from the note's equal-tempered pitch
MERGE_S = 0.06
ATTACK_DB = 3.0


def default_recording() -> Path:
    import music21

    return Path(music21.__file__).parent / "audioSearch" / "test_audio.wav"


def transcribe(audio: np.ndarray, sample_rate: int = 16000) -> list[tuple[float, float, int, int]]:
    """[samples] audio -> notes (start s, end s, MIDI pitch, velocity) from its f0 track (see the docstring)."""
    import torch

    from mididdsp.dsp import FRAME_RATE, hz_to_midi
    from mididdsp.pitch import compute_f0, frame_level_db

    f0_hz, confidence = compute_f0(audio, sample_rate=sample_rate, model="full")
    hop = sample_rate // FRAME_RATE
    level_db = frame_level_db(torch.from_numpy(audio).float()[None], torch.arange(len(f0_hz)) * hop)[0]
    pitch = hz_to_midi(f0_hz).numpy()
    confidence = confidence.numpy()
    nearest = np.round(pitch).astype(int)
    usable = (confidence >= CONFIDENCE) & (level_db > level_db.max() - RANGE_DB) & \
        (np.abs(pitch - nearest) < PITCH_TOLERANCE)
    notes, start = [], None
    for frame in range(len(pitch) + 1):
        same = (frame < len(pitch) and usable[frame] and start is not None and nearest[frame] == nearest[start])
        if same:
            continue
        if start is not None and frame - start >= MIN_NOTE_S * FRAME_RATE:
            notes.append((start, frame, int(nearest[start]), float(level_db[start:frame].max())))
        start = frame if frame < len(pitch) and usable[frame] else None
    # a confidence dip inside a held note splits it; the same pitch resumed within MERGE_S with no new attack
    # (the level not rising by ATTACK_DB) is the same note
    merged = notes[:1]
    for start, end, pitch_, peak in notes[1:]:
        last = merged[-1]
        rise = level_db[start:start + 5].max() - level_db[max(last[1] - 5, 0):last[1]].max()
        if pitch_ == last[2] and start - last[1] <= MERGE_S * FRAME_RATE and rise < ATTACK_DB:
            merged[-1] = (last[0], end, pitch_, max(last[3], peak))
        else:
            merged.append((start, end, pitch_, peak))
    notes = merged
    loudest = max(peak for *_, peak in notes)
    return [(s / FRAME_RATE, e / FRAME_RATE, p, int(np.clip(round(127 * 10 ** ((peak - loudest) / 40)), 1, 127)))
            for s, e, p, peak in notes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="?", type=Path, default=None, help="default: music21's test_audio.wav")
    parser.add_argument("-o", "--output", type=Path, required=True, help="corpus folder to write")
    parser.add_argument("--instruments", default="all", help="comma-separated, or all (default)")
    parser.add_argument("--name", default="real")
    args = parser.parse_args()

    import pretty_midi
    import soundfile as sf

    from mididdsp.audio import load_audio
    from mididdsp.datasets.corpus import INSTRUMENT_PROGRAMS

    source = args.audio or default_recording()
    audio = load_audio(source)
    notes = transcribe(audio)
    instruments = sorted(INSTRUMENT_PROGRAMS) if args.instruments == "all" else args.instruments.split(",")
    unknown = [name for name in instruments if name not in INSTRUMENT_PROGRAMS]
    if unknown:
        parser.error(f"unknown instruments {unknown}; expected some of {sorted(INSTRUMENT_PROGRAMS)}")
    args.output.mkdir(parents=True, exist_ok=True)
    sf.write(args.output / f"{args.name}.wav", audio, 16000, subtype="FLOAT")
    recordings = []
    for instrument in instruments:
        name = f"{instrument}_{args.name}"
        midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
        track = pretty_midi.Instrument(program=INSTRUMENT_PROGRAMS[instrument], name=instrument)
        track.notes = [pretty_midi.Note(velocity, pitch, start, end) for start, end, pitch, velocity in notes]
        midi.instruments.append(track)
        midi.write(str(args.output / f"{name}.mid"))
        meta = {"name": name, "instrument": instrument, "program": INSTRUMENT_PROGRAMS[instrument],
                "audio": f"{args.name}.wav", "midi": f"{name}.mid", "source": str(source),
                "duration_s": len(audio) / 16000, "n_notes": len(notes), "transcribed": True}
        (args.output / f"{name}.json").write_text(json.dumps(meta, indent=1))
        recordings.append(meta)
    manifest = {"format": "mididdsp-soundfont-corpus/1", "sample_rate": 16000, "source": str(source),
                "transcription": {"confidence": CONFIDENCE, "range_db": RANGE_DB, "min_note_s": MIN_NOTE_S,
                                  "pitch_tolerance_semitones": PITCH_TOLERANCE},
                "recordings": recordings}
    (args.output / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{source}: {len(audio) / 16000:.1f} s, {len(notes)} notes transcribed "
          f"(pitches {min(n[2] for n in notes)}-{max(n[2] for n in notes)}, velocities "
          f"{min(n[3] for n in notes)}-{max(n[3] for n in notes)}) -> {args.output} as {len(instruments)} instruments",
          file=sys.stderr)
    for start, end, pitch, velocity in notes:
        print(f"  {start:6.2f}-{end:6.2f} s  pitch {pitch:3d}  velocity {velocity:3d}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
