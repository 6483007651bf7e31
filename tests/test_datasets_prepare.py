"""`mididdsp prepare` (shards, manifest, splits, statistics, resume, bad files) and the PyTorch datasets /
DataModule over its output (shapes, audio-frame alignment, padding, workers)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mididdsp.audio import load_audio
from mididdsp.datasets import prepare as prep
from mididdsp.datasets import shards
from mididdsp.datasets.torch_data import CropDataset, RecordingDataset, pad_collate
from mididdsp.dsp.core import n_frames
from mididdsp.errors import MididdspError

from test_datasets_sources import SR, make_corpus, make_urmp, write_tone


def two_tone(path: Path, seconds: float = 3.0, switch_s: float = 1.5) -> Path:
    """440 Hz up to ``switch_s``, then 660 Hz (phase-continuous)."""
    t = np.arange(int(SR * seconds)) / SR
    frequency = np.where(t < switch_s, 440.0, 660.0)
    phase = 2 * np.pi * np.cumsum(frequency) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.5 * np.sin(phase)).astype(np.float32), SR)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """A prepared folder from URMP, corpus and audio-folder sources with the real f0 (CREPE tiny), 2 workers."""
    root = tmp_path_factory.mktemp("data")
    urmp = make_urmp(root / "urmp")
    corpus = make_corpus(root / "corpus")
    tones = root / "tones"
    two_tone(tones / "organ" / "two_tone.wav")
    write_tone(tones / "organ" / "short.wav", 440.0, 0.5)
    out = root / "prepared"
    report = prep.prepare([f"urmp:{urmp}", str(corpus), f"audio:{tones}"], out, seed=0, workers=2, progress=False)
    return {"root": root, "out": out, "report": report, "manifest": report.manifest, "tones": tones}


def fake_f0(counter: list | None = None):
    def compute_f0(audio, **kwargs):
        if counter is not None:
            counter.append(len(audio))
        frames = n_frames(len(audio))
        return torch.full((frames,), 440.0), torch.ones(frames)
    return compute_f0


def shard_of(out: Path, recording_id: str) -> Path:
    return out / shards.SHARDS_DIR / shards.shard_name(recording_id)


# --- prepare ------------------------------------------------------------------------------------------------------

def test_prepare_manifest_splits_and_statistics(prepared: dict) -> None:
    manifest, out = prepared["manifest"], prepared["out"]
    assert sorted(prepared["report"].computed) == sorted(r["id"] for r in manifest["recordings"])
    assert len(manifest["recordings"]) == 6 and len(list((out / "shards").glob("*.npz"))) == 6
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert manifest["instruments"] == {"flute": 0, "organ": 1, "violin": 2}
    expected = shards.assign_splits([r["id"] for r in manifest["recordings"]], 0, 0.1, 0.1)
    assert {r["id"]: r["split"] for r in manifest["recordings"]} == expected
    assert {r["split"] for r in manifest["recordings"]} == {"train", "valid", "test"}
    assert manifest["totals"]["duration_s"] == pytest.approx(1 + 1 + 1 + 1 + 3 + 0.5)
    assert [s["path"].endswith("Notes_3_vc_01_Duet.txt") for s in manifest["skipped"]] == [True]
    stats = manifest["statistics"]
    assert stats["violin"]["pitch_midi"]["percentiles"]["50"] == pytest.approx(69.0, abs=0.15)  # 440 Hz
    assert stats["flute"]["pitch_midi"]["percentiles"]["50"] == pytest.approx(81.0, abs=0.15)   # 880 Hz
    assert stats["violin"]["recordings"] == 2 and stats["violin"]["notes"] == 3
    # loudness statistics are those of the shards' voiced frames
    values = []
    for recording in manifest["recordings"]:
        if recording["instrument"] == "violin":
            arrays = shards.open_shard(out / recording["shard"])
            values.append(np.asarray(arrays["loudness_db"])[np.asarray(arrays["confidence"]) >= prep.VOICED_CONFIDENCE])
    values = np.concatenate(values)
    assert stats["violin"]["loudness_db"]["count"] == values.size
    assert stats["violin"]["loudness_db"]["mean"] == pytest.approx(values.mean(), abs=2e-3)


def test_note_arrays_follow_the_annotation(prepared: dict) -> None:
    out = prepared["out"]
    arrays = shards.open_shard(shard_of(out, "urmp/01_Duet_vn_fl/AuSep_1_vn_01_Duet"))
    pitch, index = np.asarray(arrays["note_pitch"]), np.asarray(arrays["note_index"])
    # notes 0.1-0.5 s at 440 Hz (MIDI 69) and 0.6-0.9 s at 493.88 Hz (71): frames 25..124 and 150..224
    assert (pitch[25:125] == 69).all() and (index[25:125] == 0).all()
    assert (pitch[150:225] == 71).all() and (index[150:225] == 1).all()
    assert (pitch[:25] == 0).all() and (index[125:150] == -1).all() and (index[225:] == -1).all()
    assert np.asarray(arrays["note_onset"])[[25, 150]].tolist() == [1, 1]
    np.testing.assert_allclose(np.asarray(arrays["notes"]), [[0.1, 0.5, 69, 100], [0.6, 0.9, 71, 100]])
    corpus = shards.open_shard(shard_of(out, "corpus/flute_0000"))
    assert (np.asarray(corpus["note_pitch"])[25:200] == 81).all()
    tone = shards.open_shard(shard_of(out, "tones/organ/two_tone"))
    assert (np.asarray(tone["note_index"]) == -1).all() and (np.asarray(tone["note_pitch"]) == 0).all()


def test_resume_recomputes_only_missing_or_corrupt_shards(tmp_path: Path, monkeypatch) -> None:
    for i, frequency in enumerate((220.0, 330.0, 440.0, 550.0)):
        write_tone(tmp_path / "src" / "cello" / f"t{i}.wav", frequency, 0.3)
    calls: list = []
    monkeypatch.setattr("mididdsp.pitch.compute_f0", fake_f0(calls))
    out = tmp_path / "out"
    first = prep.prepare([str(tmp_path / "src")], out, workers=1, progress=False)
    assert len(first.computed) == 4 and len(calls) == 4
    paths = {rid: shard_of(out, rid) for rid in first.computed}
    mtimes = {rid: p.stat().st_mtime_ns for rid, p in paths.items()}
    paths["src/cello/t0"].unlink()                                              # missing shard
    data = paths["src/cello/t1"].read_bytes()
    paths["src/cello/t1"].write_bytes(data[: len(data) // 3])                   # truncated shard
    planted = out / "shards" / f".src_cello_t2{shards.TEMP_MARKER}dead.npz"     # temp file of a killed run
    planted.write_bytes(b"PK\x03\x04garbage")
    (out / "manifest.json").write_text("{ half written")
    calls.clear()
    second = prep.prepare([str(tmp_path / "src")], out, workers=1, progress=False)
    assert sorted(second.computed) == ["src/cello/t0", "src/cello/t1"] and len(calls) == 2
    assert sorted(second.cached) == ["src/cello/t2", "src/cello/t3"]
    assert paths["src/cello/t3"].stat().st_mtime_ns == mtimes["src/cello/t3"]
    assert not planted.exists()
    assert len(json.loads((out / "manifest.json").read_text())["recordings"]) == 4
    # a changed source file is recomputed
    write_tone(tmp_path / "src" / "cello" / "t3.wav", 660.0, 0.4)
    calls.clear()
    third = prep.prepare([str(tmp_path / "src")], out, workers=1, progress=False)
    assert third.computed == ["src/cello/t3"] and len(calls) == 1


KILLED_RUN = """
import sys, time, torch
import mididdsp.pitch as pitch
from mididdsp.dsp.core import n_frames
def slow(audio, **kwargs):
    time.sleep(0.4)
    return torch.full((n_frames(len(audio)),), 440.0), torch.ones(n_frames(len(audio)))
pitch.compute_f0 = slow
from mididdsp.datasets.prepare import prepare
prepare([sys.argv[1]], sys.argv[2], workers=int(sys.argv[3]), progress=False)
"""


def _wait_for_group_to_end(group: int, seconds: float) -> None:
    """Wait until no process of ``group`` is left (killing the rest after ``seconds``)."""
    import os
    import signal

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(0.2)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_leaves_only_complete_shards_and_resumes(tmp_path: Path, monkeypatch, workers: int) -> None:
    for i in range(8):
        write_tone(tmp_path / "src" / "horn" / f"t{i}.wav", 200.0 + 50 * i, 0.3)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path / "src"), str(out), str(workers)],
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((out / "shards").glob("t*.npz")) + list(
                (out / "shards").glob("src*.npz")):
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        process.kill()  # SIGKILL of the run (its workers, if any, are orphaned mid-file: no cleanup of any kind)
        process.wait()
    # Orphaned pool workers may finish the file in hand; then they find their parent gone and stop.
    _wait_for_group_to_end(process.pid, 10.0)
    done = [p for p in (out / "shards").glob("*.npz") if shards.TEMP_MARKER not in p.name]
    assert 1 <= len(done) < 8, "the run should have been killed part way"
    for path in done:
        shards.read_meta(path)  # complete, valid shards only
    calls: list = []
    monkeypatch.setattr("mididdsp.pitch.compute_f0", fake_f0(calls))
    report = prep.prepare([str(tmp_path / "src")], out, workers=1, progress=False)
    assert len(report.cached) == len(done) and len(calls) == 8 - len(done)
    assert not [p for p in (out / "shards").iterdir() if shards.TEMP_MARKER in p.name]


def test_bad_files_are_skipped_with_reasons(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("mididdsp.pitch.compute_f0", fake_f0())
    source = tmp_path / "src" / "flute"
    write_tone(source / "good.wav", 440.0, 0.3)
    (source / "text.wav").write_text("this is not audio")
    (source / "empty.wav").write_bytes(b"")
    sf.write(source / "tiny.wav", np.zeros(10, np.float32), SR)
    sf.write(source / "nan.wav", np.full(4000, np.nan, np.float32), SR, subtype="FLOAT")
    parser = argparse.ArgumentParser()
    prep.configure_parser(parser)
    status = prep.run(parser.parse_args([f"audio:{tmp_path / 'src'}", "--out", str(tmp_path / "out"), "--quiet"]))
    assert status == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["id"] for r in manifest["recordings"]] == ["src/flute/good"]
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert sorted(reasons) == ["empty.wav", "nan.wav", "text.wav", "tiny.wav"]
    assert all(reason for reason in reasons.values())
    printed = capsys.readouterr().out
    assert "1 recordings" in printed and all(f"skipped {source / name}" in printed for name in reasons)


def test_no_audio_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MididdspError, match="no audio files"):
        prep.prepare([str(tmp_path / "empty")], tmp_path / "out", progress=False)


def harmonic_tones(path: Path, notes, seconds: float, n_harmonics: int = 4) -> Path:
    """Audio playing ``notes`` [(start, end, pitch, velocity)] as harmonic tones (1/k amplitudes), silence between."""
    t = np.arange(int(SR * seconds)) / SR
    audio = np.zeros_like(t)
    for start, end, pitch, _ in notes:
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        inside = (t >= start) & (t < end)
        audio[inside] += sum(np.sin(2 * np.pi * k * f0 * (t[inside] - start)) / k for k in range(1, n_harmonics + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * audio).astype(np.float32), SR)
    return path


def write_pretty_midi(path: Path, notes, program: int = 40) -> Path:
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()  # 120 qpm, 220 ticks per beat: the times below are whole ticks
    instrument = pretty_midi.Instrument(program=program)
    instrument.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for s, e, p, v in notes]
    midi.instruments.append(instrument)
    midi.write(str(path))
    return path


PAIR_NOTES = [(0.2, 0.6, 64, 80), (0.6, 1.0, 67, 100), (1.4, 1.9, 60, 64)]


def test_pairs_source_reads_the_midi_into_note_arrays_and_skips_a_bad_midi(tmp_path: Path, monkeypatch) -> None:
    import pretty_midi

    monkeypatch.setattr("mididdsp.pitch.compute_f0", fake_f0())
    folder = tmp_path / "pairs"
    harmonic_tones(folder / "take.wav", PAIR_NOTES, 2.2)
    write_pretty_midi(folder / "take.mid", PAIR_NOTES)
    harmonic_tones(folder / "bad.wav", PAIR_NOTES, 2.2)
    (folder / "bad.mid").write_bytes(b"\x00garbage, not a MIDI file\xff" * 8)
    report = prep.prepare([f"pairs:{folder}:violin"], tmp_path / "out", workers=1, progress=False)
    manifest = report.manifest
    assert [(r["id"], r["instrument"]) for r in manifest["recordings"]] == [("pairs/take", "violin")]
    [bad] = [s for s in manifest["skipped"] if Path(s["path"]).stem == "bad"]
    assert Path(bad["path"]).name == "bad.wav" and "bad.mid" in bad["reason"]
    assert "not a readable MIDI file" in bad["reason"]
    arrays = shards.open_shard(shard_of(tmp_path / "out", "pairs/take"))
    # The MIDI notes as pretty_midi reads them back (the oracle), against the shard's note list and frames.
    midi_notes = [(n.start, n.end, n.pitch, n.velocity) for n in pretty_midi.PrettyMIDI(str(folder / "take.mid")).instruments[0].notes]
    np.testing.assert_allclose(midi_notes, PAIR_NOTES, atol=1e-6)
    np.testing.assert_allclose(np.asarray(arrays["notes"]), midi_notes, atol=1e-3)
    pitch, onset = np.asarray(arrays["note_pitch"]), np.asarray(arrays["note_onset"])
    index, velocity = np.asarray(arrays["note_index"]), np.asarray(arrays["note_velocity"])
    expected_pitch = np.zeros(pitch.size)
    expected_index = np.full(pitch.size, -1)
    expected_velocity = np.zeros(pitch.size)
    for i, (start, end, note_pitch, note_velocity) in enumerate(midi_notes):
        first, stop = round(start * 250), round(end * 250)  # 50-150, 150-250, 350-475: exact frame edges
        expected_pitch[first:stop], expected_index[first:stop], expected_velocity[first:stop] = note_pitch, i, note_velocity
    np.testing.assert_array_equal(pitch, expected_pitch)
    np.testing.assert_array_equal(index, expected_index)
    np.testing.assert_array_equal(velocity, expected_velocity)
    assert np.flatnonzero(onset).tolist() == [50, 150, 350]


def test_bad_corpus_manifest_skips_that_source_and_the_run_goes_on(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("mididdsp.pitch.compute_f0", fake_f0())
    corpus = make_corpus(tmp_path / "corpus")
    (corpus / "manifest.json").write_text('{"recordings": [{"name": "violin_0000", ')  # cut off mid-write
    write_tone(tmp_path / "tones" / "cello" / "a.wav", 220.0, 0.3)
    parser = argparse.ArgumentParser()
    prep.configure_parser(parser)
    status = prep.run(parser.parse_args([str(corpus), f"audio:{tmp_path / 'tones'}", "--out", str(tmp_path / "out"),
                                         "--quiet", "--workers", "1"]))
    assert status == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["id"] for r in manifest["recordings"]] == ["tones/cello/a"]
    [skip] = manifest["skipped"]
    assert skip["path"] == str(corpus / "manifest.json") and "not a readable corpus manifest.json" in skip["reason"]
    assert f"skipped {corpus / 'manifest.json'}: " in capsys.readouterr().out
    # With nothing else to prepare: one clear line naming the manifest and the problem, no traceback.
    with pytest.raises(MididdspError) as error:
        prep.prepare([str(corpus)], tmp_path / "out2", workers=1, progress=False)
    message = str(error.value)
    assert "\n" not in message and message.startswith("nothing to prepare")
    assert f"{corpus / 'manifest.json'}: not a readable corpus manifest.json" in message


@pytest.mark.fluidsynth
def test_soundfont_corpus_to_prepare_end_to_end(tmp_path: Path) -> None:
    import csv

    from mididdsp.datasets.corpus import build_corpus

    corpus_manifest = build_corpus(tmp_path / "corpus", ["flute", "trumpet"], minutes=0.05, seed=0,
                                   sources=["generated"], progress=False)
    entries = {f"corpus/{e['name']}": e for e in corpus_manifest["recordings"]}
    assert sorted(e["instrument"] for e in entries.values()) == ["flute", "trumpet"]
    report = prep.prepare([f"corpus:{tmp_path / 'corpus'}"], tmp_path / "out", seed=0, workers=1, progress=False)
    manifest = report.manifest
    assert not manifest["skipped"] and sorted(report.computed) == sorted(entries)
    assert manifest["instruments"] == {"flute": 0, "trumpet": 1}
    by_id = {r["id"]: r for r in manifest["recordings"]}
    assert sorted(by_id) == sorted(entries)
    assert {i: r["split"] for i, r in by_id.items()} == shards.assign_splits(list(entries), 0, 0.1, 0.1)
    for recording_id, entry in entries.items():
        recording = by_id[recording_id]
        assert recording["instrument"] == entry["instrument"]
        assert recording["duration_s"] == pytest.approx(entry["duration_s"], abs=1e-3)
        assert manifest["statistics"][entry["instrument"]]["notes"] == entry["n_notes"]
        arrays = shards.open_shard(tmp_path / "out" / recording["shard"])
        with open(tmp_path / "corpus" / entry["notes"], newline="") as file:
            truth = [(float(row["start"]), float(row["end"]), int(row["pitch"])) for row in csv.DictReader(file)]
        assert len(truth) == entry["n_notes"] >= 3
        onset, pitch = np.asarray(arrays["note_onset"]), np.asarray(arrays["note_pitch"])
        assert np.flatnonzero(onset).tolist() == [int(np.floor(start * 250 + 0.5)) for start, _, _ in truth]
        assert np.asarray(arrays["notes"])[:, [0, 2]].tolist() == [[start, p] for start, _, p in truth]
        for start, end, note_pitch in truth:
            assert (pitch[int(np.floor(start * 250 + 0.5)):int(np.floor(end * 250 - 0.5))] == note_pitch).all()
        # The rendered pitch: f0 of voiced note frames within 50 cents of the note (vibrato is at most 40 cents).
        f0, confidence = np.asarray(arrays["f0_hz"]), np.asarray(arrays["confidence"])
        voiced = (pitch > 0) & (confidence >= prep.VOICED_CONFIDENCE)
        cents = 1200 * np.log2(f0[voiced] / (440.0 * 2 ** ((pitch[voiced] - 69) / 12)))
        assert voiced.sum() >= 0.3 * (pitch > 0).sum() and voiced.sum() >= 100
        assert np.mean(np.abs(cents) < 50) >= 0.8, recording_id


def test_monophonic_reduction_keeps_top_of_chords_and_trims_overlaps() -> None:
    from mididdsp.score import Note

    notes = [Note(0.0, 1.0, 60, 90), Note(0.0, 1.0, 64, 90), Note(0.5, 1.5, 67, 80)]
    assert prep.monophonic_notes(notes) == [Note(0.0, 0.5, 64, 90), Note(0.5, 1.5, 67, 80)]


# --- datasets -----------------------------------------------------------------------------------------------------

def test_crops_are_aligned_with_audio_and_f0(prepared: dict) -> None:
    out = prepared["out"]
    dataset = CropDataset(out, split=None, crop_seconds=0.5, random=False, hop_seconds=0.25)
    source = load_audio(prepared["tones"] / "organ" / "two_tone.wav")
    arrays = shards.open_shard(shard_of(out, "tones/organ/two_tone"))
    items = [dataset[i] for i in range(len(dataset)) if dataset.recordings[dataset.items[i][0]]["id"].endswith("two_tone")]
    assert [int(item["start_frame"]) for item in items] == list(range(0, 626, 62))  # 3 s, hop 0.25 s (62 frames)
    scale = float(arrays["audio_scale"])
    for item in items:
        start = int(item["start_frame"])
        assert item["audio"].shape == (8000,) and item["f0_hz"].shape == (126,)
        np.testing.assert_array_equal(item["audio"].numpy(), np.asarray(arrays["audio"][start * 64:start * 64 + 8000], np.float32) * scale)
        np.testing.assert_allclose(item["audio"].numpy(), source[start * 64:start * 64 + 8000], atol=scale * 0.51)
        times = (start + np.arange(126)) / 250.0
        f0 = item["f0_hz"].numpy()
        np.testing.assert_allclose(f0[(times > 0.1) & (times < 1.4)], 440.0, rtol=0.01)
        np.testing.assert_allclose(f0[(times > 1.6) & (times < 2.9)], 660.0, rtol=0.01)
        assert item["mask"].sum() == 126 and int(item["length"]) == 8000


def test_random_crops_reproducible_and_short_recordings(prepared: dict) -> None:
    out = prepared["out"]
    dataset = CropDataset(out, split=None, crop_seconds=0.8, random=True)
    two_tone = next(i for i, (r, _) in enumerate(dataset.items) if dataset.recordings[r]["id"].endswith("two_tone"))
    torch.manual_seed(5)
    starts = [int(dataset[two_tone]["start_frame"]) for _ in range(20)]
    torch.manual_seed(5)
    assert starts == [int(dataset[two_tone]["start_frame"]) for _ in range(20)]
    assert len(set(starts)) > 5 and max(starts) <= (48000 - 12800) // 64
    short = next(i for i, (r, _) in enumerate(dataset.items) if dataset.recordings[r]["id"].endswith("short"))
    item = dataset[short]  # 0.5 s recording in a 0.8 s crop: padded
    assert int(item["length"]) == 8000 and item["audio"].shape == (12800,)
    assert (item["audio"][8000:] == 0).all() and item["mask"].sum() == n_frames(8000)
    assert (item["loudness_db"][n_frames(8000):] == -80).all()
    assert (item["f0_hz"][n_frames(8000):] == item["f0_hz"][n_frames(8000) - 1]).all()
    assert (item["note_index"] == -1).all() and not bool(item["has_notes"])
    skipping = CropDataset(out, split=None, crop_seconds=0.8, short="skip")
    assert sorted(r["id"] for r in dataset.recordings if r not in skipping.recordings) == ["tones/organ/short"]


def test_whole_recordings_with_notes(prepared: dict) -> None:
    dataset = RecordingDataset(prepared["out"], split=None)
    items = {item["id"]: item for item in (dataset[i] for i in range(len(dataset)))}
    violin = items["urmp/01_Duet_vn_fl/AuSep_1_vn_01_Duet"]
    assert violin["audio"].shape == (16000,) and violin["f0_hz"].shape == (251,)
    np.testing.assert_allclose(violin["notes"].numpy(), [[0.1, 0.5, 69, 100], [0.6, 0.9, 71, 100]])
    batch = pad_collate([violin, items["tones/organ/two_tone"]])
    assert batch["audio"].shape == (2, 48000) and batch["f0_hz"].shape == (2, 751)
    assert batch["mask"].sum(1).tolist() == [251, 751] and batch["notes"].shape == (2, 2, 4)
    assert (batch["notes"][1] == -1).all() and (batch["audio"][0, 16000:] == 0).all()


def test_datamodule_batches_with_two_workers(prepared: dict) -> None:
    from mididdsp.training.datamodule import PreparedDataModule

    module = PreparedDataModule(prepared["out"], batch_size=3, num_workers=2, crop_seconds=1.0, seed=1)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["audio"].shape == (3, 16000) and batch["audio"].dtype == torch.float32
    for key in ("f0_hz", "confidence", "loudness_db", "note_pitch", "note_onset", "note_offset", "note_index",
                "note_position", "note_velocity", "mask"):
        assert batch[key].shape == (3, 251), key
    assert batch["note_index"].dtype == torch.int64 and batch["instrument"].shape == (3,)
    assert set(batch["instrument"].tolist()) <= set(module.instruments.values())
    valid = [b["audio"] for b in module.val_dataloader()]
    again = [b["audio"] for b in module.val_dataloader()]
    assert len(valid) >= 1 and all(torch.equal(a, b) for a, b in zip(valid, again))
    whole = next(iter(module.recording_dataloader("train", batch_size=2)))
    assert whole["audio"].shape[0] == min(2, len(RecordingDataset(prepared["out"], "train")))
