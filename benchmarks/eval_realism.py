"""How close a render from a recording's own expression lands to the recording (issue 25's table), and why.

    python benchmarks/eval_realism.py data/heldout/sf_GMbank data/heldout/TimGM6mb [--per-instrument 1]
        [--instruments violin,flute] [--model DIR] [--json runs/eval_realism.json]

For each recording of a corpus folder (``mididdsp corpus`` output: audio + the performed MIDI, never trained on
when the folder is a held-out SoundFont's), the notes alone (no CC, no bends: the expression must carry the
performance) are

- ``render``: extracted (``mididdsp extract``'s default: the shipped coder, mixed controls) and played back by the
  MIDI model from that table (``render --expression-in``);
- ``flat``: played by FluidSynth with FluidR3, the velocities as written and nothing else (a sampler that ignores
  the expression);
- ``resynth``: the recording resynthesised by the shipped autoencoder (the synthesizer's floor).

Figures, inside notes (frames from each written onset to its end): log-mel L1 in dB to the recording, one level
offset removed per recording (the median difference of the audible bins), then both spectrograms floored 80 dB
under the recording's loudest bin; the A-weighted loudness contour's r against the recording's; and whether the
render plays at the recording's level (its RMS minus the recording's, median inside notes).

The ablation rows say which control costs the render its distance: the generator's controls for the table with
one of them replaced by the extractor's (the coder's, amplitude measured from the audio; f0 the refined CREPE
track), played by the generator's own synthesizer (the same reverb). ``teacher all`` replaces them all.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pretty_midi
import torch

SF2 = "/usr/share/sounds/sf2"
FLOOR_DB = 80.0
ABLATIONS = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")


def log_mel_db(audio: np.ndarray) -> np.ndarray:
    from mididdsp.dsp import log_mel_spectrogram

    # no absolute floor (log_mel_spectrogram's default is -60 dB of mel power, which a quiet instrument's upper
    # bands reach): the comparison floors FLOOR_DB under the recording's loudest bin instead
    return (10.0 / math.log(10.0)) * log_mel_spectrogram(torch.from_numpy(audio)[None].float(),
                                                         eps=1e-14)[0].numpy()


def log_mel_l1(audio: np.ndarray, reference_db: np.ndarray, mask: np.ndarray) -> float:
    """L1 (dB) inside ``mask`` frames, one level offset removed (the median difference inside notes, among bins
    within FLOOR_DB of the reference's max), then both floored FLOOR_DB under the reference's max.

    The offset comes off before the floor: a render 4 dB quieter overall (General MIDI's default CC7 of 100 is
    -4.2 dB) otherwise loses more of its quiet bins to the floor and reads up to 1 dB worse with the same shape."""
    frames = min(len(mask), reference_db.shape[0])
    other = log_mel_db(audio)[:frames]
    reference = reference_db[:frames]
    inside = mask[:other.shape[0]]
    floor = reference.max() - FLOOR_DB
    audible = inside[:, None] & (reference > floor)
    offset = np.median((other - reference)[audible]) if audible.any() else 0.0
    other, reference = np.maximum(other - offset, floor), np.maximum(reference, floor)
    return float(np.abs(other - reference)[inside].mean())


def loudness_r(audio: np.ndarray, reference_loudness: np.ndarray, mask: np.ndarray) -> float:
    from mididdsp.dsp import compute_loudness

    loudness = compute_loudness(torch.from_numpy(audio)[None].float())[0].numpy()
    frames = min(len(loudness), len(reference_loudness), len(mask))
    inside = mask[:frames]
    return float(np.corrcoef(loudness[:frames][inside], reference_loudness[:frames][inside])[0, 1])


def level_difference_db(audio: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Median over the frames inside notes of the 32 ms RMS level of ``audio`` minus that of ``reference`` (dB):
    whether a render plays at its recording's level (the other figures remove that offset)."""
    from mididdsp.pitch import frame_level_db

    frames = len(mask)
    levels = [frame_level_db(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None],
                             torch.arange(frames) * 64)[0] for x in (audio, reference)]
    return float(np.median((levels[0] - levels[1])[mask]))


def notes_only(midi_path: Path, out_path: Path) -> None:
    """The performed MIDI without controllers and bends (the notes, velocities and programs)."""
    midi = pretty_midi.PrettyMIDI(str(midi_path))
    for instrument in midi.instruments:
        instrument.control_changes = []
        instrument.pitch_bends = []
    midi.write(str(out_path))


def note_mask(score, n_frames: int) -> np.ndarray:
    mask = np.zeros(n_frames, bool)
    for track in score.tracks:
        for note in track.notes:
            mask[int(round(note.start * 250)):int(round(note.end * 250))] = True
    return mask


def fit(audio: np.ndarray, n_samples: int) -> np.ndarray:
    return np.pad(audio[:n_samples], (0, max(0, n_samples - len(audio)))).astype(np.float32)


def ablations(midi_model, score, table, extracted: dict, n_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The generator's controls for ``table`` with each of ABLATIONS taken from ``extracted`` ([1, T, ...]), played
    by the generator's synthesizer; also ``generator`` (none replaced), ``teacher all``, and ``generator, dry`` and
    ``teacher amplitude, dry`` (the same without the reverb, at the level it gives)."""
    from mididdsp.dsp import n_frames as count_frames
    from mididdsp.render import match_expression
    from mididdsp.synthesis.generator import generate_voice

    generator = midi_model.torch_module("generator")
    (track, voice, notes), = midi_model.voices(score)
    name = table[0]["instrument"]
    instrument = midi_model.instruments[name]
    rows = match_expression(table, [(track, voice, notes)], midi_model.ranges)[(track, voice)]
    frames = count_frames(n_samples)
    note_array = np.array([[n.start, n.end, n.pitch, n.velocity] for n in notes], np.float32)
    voice_seed = (int(seed) * 1_000_003 + track * 1009 + voice) % (1 << 62)
    generated = generate_voice(generator, note_array, rows, instrument, frames, voice_seed)
    teacher = {}
    for key in ABLATIONS:
        value = extracted[key][:, :frames]
        if value.shape[1] < frames:  # pad with silence / the last f0
            pad = frames - value.shape[1]
            tail = value[:, -1:].expand(-1, pad, *value.shape[2:]) if key == "f0_hz" else \
                torch.zeros(1, pad, *value.shape[2:])
            value = torch.cat([value, tail], dim=1)
        teacher[key] = value.float()
    if teacher["amplitude"].dim() == 3:
        teacher["amplitude"] = teacher["amplitude"][..., 0]
    ids = torch.tensor([instrument])
    out = {}
    variants = {"generator": {}, **{f"teacher {key}": {key: teacher[key]} for key in ABLATIONS},
                "teacher all": dict(teacher)}
    with torch.no_grad():
        for label, replaced in variants.items():
            controls = {key: replaced.get(key, generated[key]) for key in ABLATIONS}
            noise = torch.rand(1, n_samples, generator=torch.Generator().manual_seed(0)) * 2 - 1
            out[label] = generator.synth.render(controls, n_samples, ids, noise=noise)[0].numpy()
        # without the learned reverb (its tail and body filter), at the level the reverb gives: how much of the
        # loudness contour's distance is the reverb's
        dry_variants = {"generator, dry": {}, "teacher amplitude, dry": {"amplitude": teacher["amplitude"]}}
        for label, replaced in dry_variants.items():
            controls = generator.synth.dry_at_wet_level({key: replaced.get(key, generated[key]) for key in ABLATIONS},
                                                         ids)
            noise = torch.rand(1, n_samples, generator=torch.Generator().manual_seed(0)) * 2 - 1
            out[label] = generator.synth.render(controls, n_samples, ids, reverb=False, noise=noise)[0].numpy()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--per-instrument", type=int, default=1, help="recordings per instrument and corpus")
    parser.add_argument("--instruments", default=None)
    parser.add_argument("--model", action="append", default=None,
                        help="MIDI model directory (default: the shipped one); repeat to compare models on the same "
                             "extractions (rows labelled by the directory's name)")
    parser.add_argument("--extractor", default=None, help="extraction model (default: the shipped coder)")
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import mididdsp
    from mididdsp.audio import load_audio
    from mididdsp.datasets.corpus import render_midi
    from mididdsp.dsp import compute_loudness, n_frames
    from mididdsp.expression.extract import extract
    from mididdsp.models import load_model
    from mididdsp.resynth import PRETRAINED, ResynthOptions, resynthesize
    from mididdsp.score import read_midi

    directories = args.model or [None]
    midi_models = {("" if len(directories) == 1 else f"{Path(d).name if d else 'shipped'}: "): mididdsp.load_model(d)
                   for d in directories}
    coder = load_model(args.extractor or PRETRAINED / "synthesis_coder")
    autoencoder = load_model(PRETRAINED / "autoencoder")
    wanted = set(args.instruments.split(",")) if args.instruments else None
    results = []
    for corpus in args.corpora:
        recordings = sorted(p for p in corpus.glob("*.json") if p.name != "manifest.json")
        taken: dict[str, int] = {}
        for meta_path in recordings:
            meta = json.loads(meta_path.read_text())
            instrument = meta["instrument"]
            if (wanted and instrument not in wanted) or taken.get(instrument, 0) >= args.per_instrument:
                continue
            taken[instrument] = taken.get(instrument, 0) + 1
            started = time.perf_counter()
            audio = load_audio(corpus / meta["audio"])
            n_samples = len(audio)
            with tempfile.TemporaryDirectory() as tmp:
                stripped = Path(tmp) / "notes.mid"
                notes_only(corpus / meta["midi"], stripped)
                score = read_midi(stripped)
                flat = fit(render_midi(stripped, f"{SF2}/FluidR3_GM.sf2", duration_s=n_samples / 16000), n_samples)
            extraction = extract(audio, score, coder, instrument)
            resynthesised = fit(resynthesize(audio, autoencoder, ResynthOptions(instrument=instrument, adjust=False,
                                                                                f0_refine=True)), n_samples)
            reference_db = log_mel_db(audio)
            reference_loudness = compute_loudness(torch.from_numpy(audio)[None].float())[0].numpy()
            mask = note_mask(score, reference_db.shape[0])
            signals = {"flat FluidR3": flat, "resynth": resynthesised}
            for prefix, midi_model in midi_models.items():
                signals[f"{prefix}render"] = fit(midi_model.render(score, extraction.table, seed=0,
                                                                   instrument=instrument).audio, n_samples)
                if args.ablations:
                    signals.update({prefix + label: signal for label, signal in ablations(
                        midi_model, score, extraction.table, extraction.controls, n_samples).items()})
            row = {"corpus": corpus.name, "recording": meta["name"], "instrument": instrument}
            for label, signal in signals.items():
                row[f"{label} log-mel L1"] = log_mel_l1(signal, reference_db, mask)
                row[f"{label} loudness r"] = loudness_r(signal, reference_loudness, mask)
            for prefix in midi_models:
                row[f"{prefix}render level dB"] = level_difference_db(signals[f"{prefix}render"], audio,
                                                                      note_mask(score, n_frames(n_samples)))
            results.append(row)
            print(f"{corpus.name} {meta['name']}: " + ", ".join(
                f"{label} {row[f'{label} log-mel L1']:.2f}" for label in signals) +
                f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    labels = [key[:-len(" log-mel L1")] for key in results[0] if key.endswith(" log-mel L1")]
    # a rendering whose loudness does not move inside the notes has no r (nan): left out of the mean
    print("\nmean over recordings: log-mel L1 (dB) / loudness r, per corpus")
    for label in labels:
        print(f"  {label:44s}" + "".join(
            f"{np.mean([r[f'{label} log-mel L1'] for r in results if r['corpus'] == c.name]):8.2f} /"
            f"{np.nanmean([r[f'{label} loudness r'] for r in results if r['corpus'] == c.name]):6.3f}"
            for c in args.corpora))
    for prefix in midi_models:
        print(f"  {prefix}render level minus the recording's, median inside notes (dB):" + "".join(
            f"{np.mean([r[f'{prefix}render level dB'] for r in results if r['corpus'] == c.name]):+8.2f}"
            f" (|max| {np.max([abs(r[f'{prefix}render level dB']) for r in results if r['corpus'] == c.name]):.1f})"
            for c in args.corpora))
    by_instrument: dict[str, list] = {}
    for r in results:
        by_instrument.setdefault(r["instrument"], []).append(r)
    shown = [f"{prefix}render" for prefix in midi_models] + ["flat FluidR3", "resynth"]
    print(f"\nper instrument, log-mel L1 ({' / '.join(shown)}); render loudness r")
    for name, rows in sorted(by_instrument.items()):
        print(f"  {name:12s} " + " / ".join(f"{np.mean([r[f'{label} log-mel L1'] for r in rows]):.2f}"
                                            for label in shown) + "; r " +
              " / ".join(f"{np.mean([r[f'{prefix}render loudness r'] for r in rows]):.3f}" for prefix in midi_models))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
