"""What the MIDI says is what you hear: pitch, timing and dynamics of ``mididdsp render`` on held-out MIDI.

The held-out MIDI files are those of the prepared folder's valid and test recordings (the performer's notes,
bends and CC11 of the SoundFont corpus; no model was trained on them). Each is rendered by the MIDI model
(instrument from its General MIDI program, prior sampled with seed 0) and the audio is analysed:

* pitch: CREPE (tiny, refined) on the render; the fraction of voiced frames (confidence >= 0.85) inside notes
  (after their first 40 ms, the attack and legato glide) within 50 cents of the written pitch plus the bend; per
  file also "as played": the same frames of the f0 the synthesizer was given (vibrato and drift included, no
  tracker), which separates the tracker's errors from the render's;
* timing: for notes after a rest of at least 50 ms, the onset in the audio is the first 5 ms hop within 20 dB of
  the note's loudest hop; for legato notes, the first frame whose f0 is nearer the new pitch than the old one;
  the fraction of onsets within 20 ms of the file's, and the median error;
* dynamics: the same phrase at velocity 40 and 110 (every instrument, prior at temperature 0), the difference of
  the A-weighted loudness averaged in power over the phrase.

Run: ``python benchmarks/eval_render.py [MODEL] --data data/prepared [--json OUT]``; ``--velocity-only``
measures the dynamics alone (13 phrases x 2 velocities, no held-out files: 7 s on one core), and with
``--soundfonts A.sf2,B.sf2`` the same phrases played by those SoundFonts (the training corpus's) as a reference.
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


def onsets(audio: np.ndarray, score) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every note's onset as the audio shows it, (onset_s, note_start_s, after_rest, f0, confidence).

    After a rest of at least 50 ms: the 5 ms hop of steepest level rise within 60 ms of the written start. Legato
    (a new pitch without a rest): the first frame whose f0 (CREPE tiny, refined) is nearer the new pitch than the
    old. Both detectors have latencies of their own (CREPE's 64 ms window, the level's 10 ms hops), so the same
    detectors run on the SoundFont recording of the same file, and the figure is the difference."""
    from mididdsp.pitch import compute_f0, refine_f0

    f0, confidence = compute_f0(audio)
    f0 = np.asarray(refine_f0(audio, f0))
    hop_db = 10 * np.log10(np.mean(audio[: len(audio) // 80 * 80].reshape(-1, 80).astype(np.float64) ** 2, 1) + 1e-12)
    rise = np.diff(hop_db, prepend=hop_db[:1])
    found, starts, after_rest = [], [], []
    for track in score.tracks:
        if track.is_drum or not track.notes:
            continue
        for voice in track.voices():
            previous = None
            for note in voice:
                onset = np.nan
                rest = previous is None or note.start - previous.end >= 0.05
                if rest:
                    lo, hi = int((note.start - 0.06) / 0.005), int((note.start + 0.06) / 0.005)
                    if lo >= 0 and hi <= len(rise):
                        onset = (lo + int(np.argmax(rise[lo:hi]))) * 0.005
                elif previous.pitch != note.pitch:
                    lo = max(0, int(round(note.start * 250)) - 25)
                    hi = min(len(f0), int(round(note.start * 250)) + 25)
                    midi_f0 = 69 + 12 * np.log2(np.maximum(f0[lo:hi], 1) / 440)
                    nearer = np.abs(midi_f0 - note.pitch) < np.abs(midi_f0 - previous.pitch)
                    if nearer.any():
                        onset = (lo + int(np.argmax(nearer))) / 250
                found.append(onset)
                starts.append(note.start)
                after_rest.append(rest)
                previous = note
    return np.array(found), np.array(starts), np.array(after_rest), f0, np.asarray(confidence)


def analyse_render(model, midi: Path, reference_audio: np.ndarray | None = None) -> dict:
    from mididdsp.score import read_midi

    score = read_midi(midi)
    # model.render(score, seed=0) in its three steps, to keep each voice's f0 as played
    voices = model.render_voices(score, model.expression(score, seed=0), seed=0)
    audio = model.mix_voices(score, voices).audio
    ours, starts, after_rest, f0, confidence = onsets(audio, score)
    frames = len(f0)
    pitch_ok, pitch_all = pitch_within(f0, confidence, score)
    played_ok = played_all = 0
    for track_index, track in enumerate(score.tracks):
        if track.is_drum or not track.notes:
            continue
        bend = track.control_frames(frames)["pitch_bend"]
        for voice_index, notes in enumerate(track.voices()):  # the same frames of the f0 the synthesizer got
            played = np.zeros(frames)
            for first, curve, _ in voices[(track_index, voice_index)].curves:
                count = max(0, min(len(curve), frames - first))
                played[first:first + count] = curve[:count]
            for note in notes:
                first, last = int(round(note.start * 250)), min(frames, int(round(note.end * 250)))
                inside = np.arange(first + 10, max(first + 10, last - 5))
                inside = inside[inside < frames]
                inside = inside[played[inside] > 0]
                written = note.pitch + bend[inside]
                cents = 1200 * np.log2(played[inside] / (440 * 2 ** ((written - 69) / 12)))
                played_ok += int((np.abs(cents) <= 50).sum())
                played_all += len(inside)
    result = {"pitch_ok": pitch_ok, "pitch_frames": pitch_all, "onset_to_written": ours - starts,
              "after_rest": after_rest, "played_ok": played_ok, "played_frames": played_all}
    if reference_audio is not None:
        reference, _, _, reference_f0, reference_confidence = onsets(reference_audio, score)
        result["onset_to_reference"] = ours - reference
        # the same figure read from the recording the MIDI file was made with: what the tracker makes of the
        # performer's own vibrato and bends
        result["recording_pitch_ok"], result["recording_pitch_frames"] = pitch_within(
            reference_f0, reference_confidence, score)
        result["loudness_r"] = loudness_r_inside_notes(audio, reference_audio, score)
    return result


def loudness_r_inside_notes(audio: np.ndarray, reference_audio: np.ndarray, score) -> float:
    """r between the render's and the recording's A-weighted loudness (dB) over the frames inside notes: how the
    render's dynamics follow the recording's, where the file (velocities, CC7, CC11) says what they are."""
    from mididdsp.dsp import compute_loudness

    ours, theirs = (compute_loudness(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None])[0].numpy()
                    for x in (audio, reference_audio))
    frames = min(len(ours), len(theirs))
    inside = np.zeros(frames, bool)
    for track in score.tracks:
        if not track.is_drum:
            for note in track.notes:
                inside[int(round(note.start * 250)):int(round(note.end * 250))] = True
    return float(np.corrcoef(ours[:frames][inside], theirs[:frames][inside])[0, 1])


def pitch_within(f0: np.ndarray, confidence: np.ndarray, score, cents_limit: float = 50.0) -> tuple[int, int]:
    """(frames within ``cents_limit`` of the written pitch + bend, voiced frames): inside every note (its first 40
    ms and last 20 ms left out), frames with CREPE confidence >= 0.85."""
    frames = len(f0)
    ok = voiced_all = 0
    for track in score.tracks:
        if track.is_drum or not track.notes:
            continue
        bend = track.control_frames(frames)["pitch_bend"]
        for voice in track.voices():
            for note in voice:
                first, last = int(round(note.start * 250)), min(frames, int(round(note.end * 250)))
                inside = np.arange(first + 10, max(first + 10, last - 5))
                inside = inside[inside < frames]
                if len(inside):
                    written = note.pitch + bend[inside]
                    cents = 1200 * np.log2(np.maximum(f0[inside], 1) / (440 * 2 ** ((written - 69) / 12)))
                    voiced = confidence[inside] >= 0.85
                    ok += int((np.abs(cents[voiced]) <= cents_limit).sum())
                    voiced_all += int(voiced.sum())
    return ok, voiced_all


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


def soundfont_dynamics(model, soundfonts: list[str]) -> dict:
    """The phrase of :func:`dynamics` at velocity 40 and 110 played by each SoundFont (FluidSynth, dry, the
    instrument's General MIDI program), measured the same way: {instrument: [dB per SoundFont]}, what the
    recordings the model learned from would show."""
    import tempfile

    from mididdsp.datasets.corpus import INSTRUMENT_PROGRAMS, render_midi
    from mididdsp.dsp import compute_loudness
    from mididdsp.score import Note, Score, Track

    out = {}
    for name in sorted(model.instruments):
        shift = int(round(model.median_pitch(name) - 69))
        out[name] = []
        for soundfont in soundfonts:
            levels = []
            for velocity in (40, 110):
                track = Track(name, INSTRUMENT_PROGRAMS[name], False, [Note(s, e, p + shift, velocity) for s, e, p in PHRASE])
                with tempfile.TemporaryDirectory() as folder:
                    Score([track], PHRASE[-1][1]).write_midi(Path(folder) / "phrase.mid")
                    audio = render_midi(Path(folder) / "phrase.mid", soundfont, sample_rate=16000)
                loudness = compute_loudness(torch.from_numpy(audio)[None])[0].numpy()[50:int(4.6 * 250)]
                levels.append(10 * np.log10(np.mean(10 ** (loudness / 10))))
            out[name].append(round(float(levels[1] - levels[0]), 2))
    return out


def main() -> None:
    import mididdsp
    from mididdsp.audio import load_audio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--json", default=None)
    parser.add_argument("--velocity-only", action="store_true",
                        help="only the velocity 40 -> 110 level difference per instrument")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--only", default=None, help="comma-separated recording ids: only these files")
    parser.add_argument("--soundfonts", default=None,
                        help="with --velocity-only: comma-separated .sf2 files that play the same phrases (FluidSynth), "
                             "the recordings' own velocity response as a reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = mididdsp.load_model(args.model)
    if args.velocity_only:
        figures = {"velocity_40_to_110_db": {k: float(v) for k, v in dynamics(model).items()}}
        if args.soundfonts:
            figures["soundfonts"] = args.soundfonts.split(",")
            figures["soundfont_velocity_40_to_110_db"] = soundfont_dynamics(model, figures["soundfonts"])
        print(json.dumps(figures, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        return
    pitch_ok = pitch_all = 0
    to_reference, to_written, rests = [], [], []
    files = held_out_midis(Path(args.data))
    if args.only:
        files = [(name, midi) for name, midi in files if name in args.only.split(",")]
    per_file: dict[str, dict] = {}
    for name, midi in files:
        reference = load_audio(midi.with_suffix(".wav")) if midi.with_suffix(".wav").is_file() else None
        result = analyse_render(model, midi, reference)
        pitch_ok += result["pitch_ok"]
        pitch_all += result["pitch_frames"]
        to_written.append(result["onset_to_written"])
        rests.append(result["after_rest"])
        if "onset_to_reference" in result:
            to_reference.append(result["onset_to_reference"])
        played = result["played_ok"] / max(result["played_frames"], 1)
        per_file[name] = {"pitch": result["pitch_ok"] / max(result["pitch_frames"], 1), "as_played": played}
        if "recording_pitch_frames" in result:
            per_file[name]["recording"] = result["recording_pitch_ok"] / max(result["recording_pitch_frames"], 1)
            per_file[name]["loudness_r"] = result["loudness_r"]
        print(f"{name}: pitch {per_file[name]['pitch']:.3f} of {result['pitch_frames']} frames within 50 cents "
              f"(as played, the synthesizer's own f0: {played:.3f}; the recording: "
              f"{per_file[name].get('recording', float('nan')):.3f}); loudness r against the recording "
              f"{per_file[name].get('loudness_r', float('nan')):.3f}", flush=True)
    written = np.concatenate(to_written)
    relative = np.concatenate(to_reference)
    rest = np.concatenate(rests)
    usable = np.isfinite(relative)

    def share(values):
        values = values[np.isfinite(values)]
        return float(np.mean(np.abs(values) <= 0.02)), float(np.median(values) * 1000), int(len(values))

    figures = {"files": len(files), "pitch_within_50_cents": pitch_ok / max(pitch_all, 1), "pitch_frames": pitch_all,
               "onsets_vs_soundfont_within_20ms": share(relative)[0],
               "onsets_vs_soundfont_median_ms": share(relative)[1], "onsets_measured": share(relative)[2],
               "onsets_after_rests_vs_soundfont_within_20ms": share(relative[rest & usable])[0],
               "onsets_legato_vs_soundfont_within_20ms": share(relative[~rest & usable])[0],
               "onsets_vs_written_within_20ms": share(written)[0], "onsets_vs_written_median_ms": share(written)[1],
               "velocity_40_to_110_db": {k: float(v) for k, v in dynamics(model).items()},
               "pitch_worst_file": min(per_file.items(), key=lambda item: item[1]["pitch"]),
               "loudness_r_against_recordings_mean": float(np.mean([v["loudness_r"] for v in per_file.values()
                                                                     if "loudness_r" in v] or [np.nan])),
               "recording_pitch_worst_file": min(((k, v) for k, v in per_file.items() if "recording" in v),
                                                 key=lambda item: item[1]["recording"], default=None),
               "per_file": per_file}
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
