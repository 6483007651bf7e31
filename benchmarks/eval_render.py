"""What the MIDI says is what you hear: pitch, timing and dynamics of ``mididdsp render`` on held-out MIDI.

The held-out MIDI files are those of the prepared folder's valid and test recordings (the performer's notes,
bends and CC11 of the SoundFont corpus; no model was trained on them). Each is rendered by the MIDI model
(instrument from its General MIDI program, prior sampled with seed 0) and the audio is analysed:

* pitch: CREPE (tiny, refined) on the render; the fraction of voiced frames (confidence >= 0.85) inside notes
  (after their first 40 ms, the attack and legato glide) within 50 cents of the written pitch plus the bend;
* timing: for notes after a rest of at least 50 ms, the onset in the audio is the first 5 ms hop within 20 dB of
  the note's loudest hop; for legato notes, the first frame whose f0 is nearer the new pitch than the old one;
  the fraction of onsets within 20 ms of the file's, and the median error;
* dynamics: the same phrase at velocity 40 and 110 (every instrument, prior at temperature 0), the difference of
  the A-weighted loudness averaged in power over the phrase.

Run: ``python benchmarks/eval_render.py [MODEL] --data data/prepared [--json OUT]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

PHRASE = [(0.2, 0.6, 67), (0.7, 1.1, 69), (1.2, 1.6, 71), (1.7, 2.5, 72), (2.7, 3.1, 71), (3.2, 3.6, 69),
          (3.7, 4.6, 67)]


def held_out_midis(data_dir: Path) -> list[tuple[str, Path]]:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    out = []
    for recording in manifest["recordings"]:
        if recording["split"] in ("valid", "test") and recording.get("has_notes"):
            midi = Path(((recording.get("provenance") or {}).get("midi") or {}).get("path", ""))
            if midi.is_file():
                out.append((recording["id"], midi))
    return out


def analyse_render(model, midi: Path) -> dict:
    from mididdsp.dsp import compute_loudness
    from mididdsp.pitch import compute_f0, refine_f0
    from mididdsp.score import read_midi

    score = read_midi(midi)
    out = model.render(score, seed=0)
    audio = out.audio
    f0, confidence = compute_f0(audio)
    f0 = np.asarray(refine_f0(audio, f0))
    confidence = np.asarray(confidence)
    frames = len(f0)
    pitch_ok, pitch_all, onset_errors = 0, 0, []
    hop_db = 10 * np.log10(np.mean(audio[: len(audio) // 80 * 80].reshape(-1, 80).astype(np.float64) ** 2, 1) + 1e-12)
    for track in score.tracks:
        if track.is_drum or not track.notes:
            continue
        bend = track.control_frames(frames)["pitch_bend"]
        for voice in track.voices():
            previous = None
            for note in voice:
                first, last = int(round(note.start * 250)), min(frames, int(round(note.end * 250)))
                inside = np.arange(first + 10, max(first + 10, last - 5))
                inside = inside[inside < frames]
                if len(inside):
                    written = note.pitch + bend[inside]
                    cents = 1200 * np.log2(np.maximum(f0[inside], 1) / (440 * 2 ** ((written - 69) / 12)))
                    voiced = confidence[inside] >= 0.85
                    pitch_ok += int((np.abs(cents[voiced]) <= 50).sum())
                    pitch_all += int(voiced.sum())
                if previous is None or note.start - previous.end >= 0.05:
                    lo, hi = int((note.start - 0.1) / 0.005), int(min(note.end, note.start + 0.15) / 0.005)
                    window = hop_db[max(lo, 0):hi]
                    if len(window) and lo >= 0:
                        onset = (np.argmax(window > window.max() - 20) + lo) * 0.005
                        onset_errors.append(onset - note.start)
                elif previous.pitch != note.pitch:
                    lo = max(0, int(round(note.start * 250)) - 25)
                    hi = min(frames, int(round(note.start * 250)) + 25)
                    midi_f0 = 69 + 12 * np.log2(np.maximum(f0[lo:hi], 1) / 440)
                    nearer = np.abs(midi_f0 - note.pitch) < np.abs(midi_f0 - previous.pitch)
                    if nearer.any():
                        onset_errors.append((lo + int(np.argmax(nearer))) / 250 - note.start)
                previous = note
    loudness = compute_loudness(torch.from_numpy(audio)[None])[0].numpy()
    return {"pitch_ok": pitch_ok, "pitch_frames": pitch_all, "onset_errors": onset_errors,
            "peak": float(np.abs(audio).max()), "loudness_max": float(loudness.max())}


def dynamics(model) -> dict:
    from mididdsp.dsp import compute_loudness
    from mididdsp.score import Note, Score, Track

    out = {}
    for name in sorted(model.instruments):
        levels = []
        for velocity in (40, 110):
            shift = int(round(model.median_pitch(name) - 69))
            track = Track(name, 40, False, [Note(s, e, p + shift, velocity) for s, e, p in PHRASE])
            score = Score([track], PHRASE[-1][1])
            audio = model.render(score, seed=0, temperature=0.0, instrument=name, reverb=False).audio
            loudness = compute_loudness(torch.from_numpy(audio)[None])[0].numpy()[50:int(4.6 * 250)]
            levels.append(10 * np.log10(np.mean(10 ** (loudness / 10))))
        out[name] = round(levels[1] - levels[0], 2)
    return out


def main() -> None:
    import mididdsp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = mididdsp.load_model(args.model)
    pitch_ok = pitch_all = 0
    errors = []
    files = held_out_midis(Path(args.data))
    for name, midi in files:
        result = analyse_render(model, midi)
        pitch_ok += result["pitch_ok"]
        pitch_all += result["pitch_frames"]
        errors += result["onset_errors"]
        within = np.mean(np.abs(result["onset_errors"]) <= 0.02) if result["onset_errors"] else float("nan")
        print(f"{name}: pitch {result['pitch_ok'] / max(result['pitch_frames'], 1):.3f} of "
              f"{result['pitch_frames']} frames within 50 cents; onsets within 20 ms {within:.3f}", flush=True)
    errors = np.abs(np.array(errors))
    figures = {"files": len(files), "pitch_within_50_cents": pitch_ok / max(pitch_all, 1), "pitch_frames": pitch_all,
               "onsets": int(len(errors)), "onsets_within_20ms": float(np.mean(errors <= 0.02)),
               "onset_median_error_ms": float(np.median(errors) * 1000), "onset_p95_error_ms":
               float(np.percentile(errors, 95) * 1000), "velocity_40_to_110_db": dynamics(model)}
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
