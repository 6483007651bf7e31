"""How differently SoundFonts play the same notes, in the resynthesis metric (the multi-scale spectral loss).

    python benchmarks/soundfont_distance.py [--instruments violin,cello] [--soundfonts A.sf2,B.sf2,...]

For each instrument, one phrase (five pitches spread over its range, each at velocity 60 and 100, 1.5 s notes
with 0.5 s rests) is rendered by every SoundFont with the corpus's FluidSynth settings (dry, 16 kHz), each
render scaled to the same RMS (the level is not the timbre), and every pair scored with the multi-scale spectral
loss over 4 s pieces, as `eval_autoencoder.py` scores a resynthesis. A model that hears only f0, loudness and
the instrument cannot tell two SoundFonts' samples apart when both train it: the figure says how far apart the
timbres it has to fit at once are, on the same scale as its resynthesis loss.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import torch

from eval_autoencoder import piecewise_spectral_loss
from mididdsp.datasets.corpus import INSTRUMENT_PROGRAMS, render_midi
from mididdsp.datasets.melodies import INSTRUMENT_RANGES

SF2 = "/usr/share/sounds/sf2"
DEFAULT_SOUNDFONTS = f"{SF2}/FluidR3_GM.sf2,{SF2}/MuseScore_General_Full.sf2,{SF2}/sf_GMbank.sf2"


def phrase(instrument: str, path: Path) -> float:
    """Write the test phrase for ``instrument`` to ``path``; returns its length in seconds."""
    low, high = INSTRUMENT_RANGES[instrument]
    track = pretty_midi.Instrument(INSTRUMENT_PROGRAMS[instrument])
    start = 0.25
    for pitch in np.linspace(low + 2, high - 2, 5).round().astype(int):
        for velocity in (60, 100):
            track.notes.append(pretty_midi.Note(velocity, int(pitch), start, start + 1.5))
            start += 2.0
    midi = pretty_midi.PrettyMIDI()
    midi.instruments.append(track)
    midi.write(str(path))
    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", default=",".join(INSTRUMENT_RANGES))
    parser.add_argument("--soundfonts", default=DEFAULT_SOUNDFONTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    soundfonts = args.soundfonts.split(",")
    names = [Path(soundfont).stem for soundfont in soundfonts]
    pairs = list(itertools.combinations(range(len(soundfonts)), 2))
    print("| instrument | " + " | ".join(f"{names[a]} vs {names[b]}" for a, b in pairs) + " |")
    print("|---|" + "---|" * len(pairs))
    totals = np.zeros(len(pairs))
    instruments = args.instruments.split(",")
    with tempfile.TemporaryDirectory() as folder:
        for instrument in instruments:
            duration = phrase(instrument, Path(folder) / f"{instrument}.mid")
            renders = []
            for soundfont in soundfonts:
                audio = torch.from_numpy(render_midi(Path(folder) / f"{instrument}.mid", soundfont,
                                                     duration_s=duration))
                renders.append(audio / audio.pow(2).mean().sqrt().clamp_min(1e-9) * 0.05)
            losses = [float(np.mean(piecewise_spectral_loss(renders[a], renders[b]))) for a, b in pairs]
            totals += losses
            print(f"| {instrument} | " + " | ".join(f"{loss:.2f}" for loss in losses) + " |")
    print("| mean | " + " | ".join(f"{total / len(instruments):.2f}" for total in totals) + " |")


if __name__ == "__main__":
    main()
