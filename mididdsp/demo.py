"""`mididdsp demo`: render the bundled MIDI file (``mididdsp/data/demo.mid``: the opening of Beethoven's "Ode to
Joy", public domain, arranged here for violin, flute and cello, written by :func:`demo_score`) with the shipped
MIDI model; ``--resynth``: timbre transfer of a bundled recording with the shipped autoencoder (a trumpet phrase
played back as a violin); ``--dsp`` (or when no model is installed): a short phrase from a note list with the
DSP core alone.

The bundled example is 8 s of a held-out recording of the project's SoundFont corpus (never used in training).
For the DSP-only phrase, hand-written controls stand in for the learned levels: a bowed-string-like harmonic spectrum whose brightness
follows the note's loudness, an attack/decay envelope, delayed vibrato, a breath of noise at each onset, and an
exponentially decaying reverb. Later levels replace these rules with trained networks.
"""
from __future__ import annotations

import argparse
from pathlib import Path

# (start s, end s, MIDI pitch, velocity 0..127): the opening of a simple melody
DEMO_NOTES = [(0.0, 0.45, 67, 90), (0.5, 0.95, 69, 80), (1.0, 1.45, 71, 95), (1.5, 2.45, 74, 110),
              (2.5, 2.95, 72, 85), (3.0, 3.45, 71, 80), (3.5, 4.8, 67, 100)]


EXAMPLE = Path(__file__).resolve().parent / "data" / "example_trumpet.wav"
DEMO_MIDI = Path(__file__).resolve().parent / "data" / "demo.mid"

# "Ode to Joy" (Beethoven, 1824; public domain), D major, 8 bars at 100 bpm: (beat, beats, pitch) per note.
_THEME = [(0, 1, 78), (1, 1, 78), (2, 1, 79), (3, 1, 81), (4, 1, 81), (5, 1, 79), (6, 1, 78), (7, 1, 76),
          (8, 1, 74), (9, 1, 74), (10, 1, 76), (11, 1, 78), (12, 1.5, 78), (13.5, 0.5, 76), (14, 2, 76)]
_ENDING = [(12, 1.5, 76), (13.5, 0.5, 74), (14, 2, 74)]
_BASS = [(0, 4, 50), (4, 4, 45), (8, 4, 50), (12, 4, 45), (16, 4, 50), (20, 4, 45), (24, 4, 50), (28, 2, 45),
         (30, 2, 50)]


def demo_score():
    """The demo arrangement as a Score: violin plays the theme, flute answers with the ending (crescendo in
    velocity), cello holds the bass and closes on a double stop (a chord: two voices)."""
    from mididdsp.score import Note, Score, Track

    beat = 0.6

    def notes(cells, offset=0.0, velocity=lambda i: 80):
        return [Note(round((offset + b) * beat, 6), round((offset + b + d) * beat - 0.02, 6), p, velocity(i))
                for i, (b, d, p) in enumerate(cells)]

    violin = notes(_THEME, velocity=lambda i: 70 + 3 * i)
    flute = notes(_THEME[:12] + _ENDING, offset=16, velocity=lambda i: 60 + 4 * i)
    cello = notes(_BASS, velocity=lambda i: 70) + [Note(31 * beat, 32 * beat + 0.6, 57, 75)]
    modulation = {1: [(14 * beat, 64.0), (16 * beat, 0.0), (30 * beat, 80.0)]}  # vibrato on the long notes
    tracks = [Track("violin", 40, False, violin, controls=modulation), Track("flute", 73, False, flute),
              Track("cello", 42, False, cello)]
    return Score(tracks, max(n.end for t in tracks for n in t.notes))


def write_demo_midi(path: str | Path = DEMO_MIDI) -> Path:
    """Write :func:`demo_score` as a MIDI file (how ``mididdsp/data/demo.mid`` was made)."""
    demo_score().write_midi(path)
    return Path(path)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="demo.wav", help="output WAV file (default: demo.wav)")
    parser.add_argument("--resynth", action="store_true",
                        help="timbre transfer of a bundled recording with the shipped autoencoder instead")
    parser.add_argument("--instrument", default="violin",
                        help="--resynth: instrument to turn the example into (default violin)")
    parser.add_argument("--dsp", action="store_true", help="synthesize the DSP-only phrase instead (no model)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def controls_from_notes(notes, n_frames: int, frame_rate: int = 250, n_harmonics: int = 60, n_noise_bands: int = 65):
    """Rule-based frame controls for a monophonic note list; returns the dict DDSPSynth.synthesize takes."""
    import torch

    from mididdsp.dsp import midi_to_hz

    time = torch.arange(n_frames) / frame_rate
    f0_midi = torch.full((n_frames,), float(notes[0][2]))
    amplitude = torch.zeros(n_frames)
    noise_gain = torch.zeros(n_frames)
    for start, end, pitch, velocity in notes:
        inside = (time >= start) & (time < end + 0.08)
        since = (time - start).clamp_min(0)
        vibrato = 0.25 * torch.sin(2 * torch.pi * 5.5 * since) * (since / 0.3 - 1).clamp(0, 1)  # semitones, delayed
        f0_midi = torch.where(time >= start, pitch + vibrato, f0_midi)
        peak = (velocity / 127) ** 2 * 0.5
        attack = (since / 0.04).clamp(max=1)
        release = ((end + 0.08 - time) / 0.08).clamp(0, 1)
        envelope = peak * attack * (1 - 0.3 * (since / (end - start)).clamp(max=1)) * release
        amplitude = torch.where(inside, envelope, amplitude)
        noise_gain = torch.where(inside, 0.02 * torch.exp(-since / 0.03) * peak + 0.001 * envelope, noise_gain)
    harmonic_numbers = torch.arange(1, n_harmonics + 1)
    # Brighter when louder: the spectral slope flattens with amplitude.
    slope = 1.8 - 2.0 * amplitude.unsqueeze(-1)
    distribution = harmonic_numbers.float() ** -slope * (1 + 0.3 * (harmonic_numbers % 2))
    noise_shape = torch.linspace(1.0, 0.1, n_noise_bands)
    return {
        "f0_hz": midi_to_hz(f0_midi)[None],
        "amplitude": amplitude[None],
        "harmonic_distribution": distribution[None],
        "noise_magnitudes": (noise_gain.unsqueeze(-1) * noise_shape)[None],
    }


def run(args: argparse.Namespace) -> int:
    from mididdsp.render import PRETRAINED_MIDI
    from mididdsp.resynth import DEFAULT_MODEL

    if args.dsp:
        return _dsp_phrase(args)
    if args.resynth:
        if (DEFAULT_MODEL / "config.yaml").is_file():
            return _timbre_transfer(args, DEFAULT_MODEL)
        print(f"no shipped autoencoder at {DEFAULT_MODEL} (build it with `make model-autoencoder`); "
              "synthesizing the DSP-only phrase")
        return _dsp_phrase(args)
    if (PRETRAINED_MIDI / "generator").is_dir():
        return _render_midi(args)
    print(f"no shipped MIDI model at {PRETRAINED_MIDI} (build it with `make model-midi`); "
          "synthesizing the DSP-only phrase")
    return _dsp_phrase(args)


def _render_midi(args: argparse.Namespace) -> int:
    from mididdsp.cli import main

    command = ["render", str(DEMO_MIDI), "-o", args.output, "--seed", str(args.seed)]
    status = main(command)
    if status == 0:
        print(f"wrote {args.output}: {DEMO_MIDI.name} (Ode to Joy for violin, flute and cello) rendered by the shipped "
              f"MIDI model; the same as `mididdsp {' '.join(command)}`")
    return status


def _timbre_transfer(args: argparse.Namespace, model_dir: Path) -> int:
    from mididdsp.audio import load_audio, save_audio
    from mididdsp.models import load_model
    from mididdsp.resynth import ResynthOptions, resynthesize

    model = load_model(model_dir)
    audio = load_audio(EXAMPLE)
    output = resynthesize(audio, model, ResynthOptions(instrument=args.instrument))
    save_audio(args.output, output, 16000)
    print(f"wrote {args.output}: {EXAMPLE.name} ({len(audio) / 16000:.1f} s) played as {args.instrument} "
          f"by the model in {model_dir}")
    return 0


def _dsp_phrase(args: argparse.Namespace) -> int:
    import torch

    from mididdsp.audio import save_audio
    from mididdsp.dsp import DDSPSynth, n_frames

    seconds = DEMO_NOTES[-1][1] + 1.0
    n_samples = int(seconds * 16000)
    synth = DDSPSynth(reverb="exponential", reverb_seconds=1.5)
    with torch.no_grad():
        synth.reverb.gain.fill_(-2.0)  # a modest room
        synth.reverb.decay.fill_(1.0)
        controls = controls_from_notes(DEMO_NOTES, n_frames(n_samples))
        audio = synth.render(controls, n_samples, generator=torch.Generator().manual_seed(args.seed))
    audio = audio / audio.abs().max().clamp_min(1e-9) * 0.5
    save_audio(args.output, audio[0], 16000)
    print(f"wrote {args.output} ({seconds:.1f} s, 16 kHz)")
    return 0
