"""Render a MIDI file nobody here wrote and look at what comes out: the first 16 bars of Beethoven's string quartet
op. 18 no. 1, 2nd movement, from the music21 corpus (reserved for evaluation, never trained on), exported to MIDI
by music21, with two odd programs (Violin II as a church organ, the viola as a clarinet) and a +1 semitone bend on
the cello for one second. Reports the mix's peak and level, each stem's peak, and for monophonic tracks the share
of voiced frames within 50 cents of the written pitch plus bend and the median deviation (CREPE tiny, refined).

Run: ``python benchmarks/check_unseen_render.py [MODEL]``.
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import mido
import numpy as np


def write_midi(path: Path) -> Path:
    from music21 import corpus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corpus.parse("beethoven/opus18no1/movement2.mxl").measures(1, 16).write("midi", fp=str(path))
    mid = mido.MidiFile(path)
    tracks = [t for t in mid.tracks if any(m.type == "note_on" for m in t)]
    for track, program in ((tracks[1], 19), (tracks[2], 71)):
        for message in track:
            if message.type == "program_change":
                message.program = program
    cello = tracks[3]
    channel = next(m.channel for m in cello if m.type == "note_on")
    events, now = [], 0
    for message in cello:
        now += message.time
        events.append((now, message))
    middle = now // 2
    events += [(middle, mido.Message("pitchwheel", channel=channel, pitch=4096)),  # +1 semitone (range 2)
               (middle + 2 * mid.ticks_per_beat, mido.Message("pitchwheel", channel=channel, pitch=0))]
    events.sort(key=lambda e: (e[0], e[1].type == "end_of_track"))
    rebuilt, last = mido.MidiTrack(), 0
    for time, message in events:
        rebuilt.append(message.copy(time=time - last))
        last = time
    mid.tracks[mid.tracks.index(cello)] = rebuilt
    mid.save(path)
    return path


def main() -> None:
    import torch

    import mididdsp
    from mididdsp.pitch import compute_f0, refine_f0

    torch.set_num_threads(2)
    model = mididdsp.load_model(sys.argv[1] if len(sys.argv) > 1 else None)
    with tempfile.TemporaryDirectory() as folder:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = mididdsp.read_midi(write_midi(Path(folder) / "op18.mid"))
    result = model.render(score, seed=0)
    mix = result.audio
    print(f"mix: {len(mix) / result.sample_rate:.1f} s, peak {np.abs(mix).max():.3f}, "
          f"RMS {20 * np.log10(np.sqrt(np.mean(mix ** 2))):.1f} dBFS, gain applied {result.gain_db:.1f} dB")
    for message in result.messages:
        print("  " + message)
    for index, audio in sorted(result.stems.items()):
        track = score.tracks[index]
        line = f"track {index} ({track.name}, program {track.program}, {len(track.voices())} voice(s)): " \
               f"peak {np.abs(audio).max():.3f}"
        if len(track.voices()) == 1:
            f0, confidence = compute_f0(audio)
            f0, confidence = np.asarray(refine_f0(audio, f0)), np.asarray(confidence)
            bend = track.control_frames(len(f0))["pitch_bend"]
            cents = []
            for note in track.notes:
                frames = np.arange(int(note.start * 250) + 10, int(note.end * 250) - 5)
                frames = frames[(frames < len(f0))]
                frames = frames[confidence[frames] >= 0.85]
                written = 440 * 2 ** ((note.pitch + bend[frames] - 69) / 12)
                cents += list(1200 * np.log2(np.maximum(f0[frames], 1) / written))
            cents = np.array(cents)
            line += f"; {np.mean(np.abs(cents) <= 50):.3f} of {len(cents)} voiced frames within 50 cents of " \
                    f"pitch + bend, median {np.median(cents):+.1f} cents"
        print(line)


if __name__ == "__main__":
    main()
