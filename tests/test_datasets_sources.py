"""Data sources (audio folder, pairs, URMP, corpus), source specs, note files, splits and shard I/O."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mididdsp.datasets import shards
from mididdsp.datasets.sources import (Recording, SkippedFile, detect_kind, iter_source, parse_source, read_notes,
                                       read_urmp_notes)
from mididdsp.errors import InputFileError, MididdspError

SR = 16000


def write_tone(path: Path, frequency: float, seconds: float, amplitude: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32), SR)
    return path


def make_urmp(root: Path) -> Path:
    piece = root / "01_Duet_vn_fl"
    write_tone(piece / "AuSep_1_vn_01_Duet.wav", 440.0, 1.0)
    write_tone(piece / "AuSep_2_fl_01_Duet.wav", 880.0, 1.0)
    write_tone(piece / "AuMix_01_Duet.wav", 660.0, 1.0)  # the mix is not a separated track
    (piece / "Notes_1_vn_01_Duet.txt").write_text("0.100\t440.0\t0.400\n0.600\t493.88\t0.300\n")
    (piece / "Notes_2_fl_01_Duet.txt").write_text("0.0 880.0 0.9\n")
    (piece / "Notes_3_vc_01_Duet.txt").write_text("0.0 110.0 0.9\n")  # annotation without audio
    return root


def make_pairs(root: Path) -> Path:
    from mididdsp.score import Note, score_from_notes

    write_tone(root / "take1.wav", 440.0, 1.0)
    score_from_notes([Note(0.1, 0.5, 69, 90), Note(0.5, 0.9, 71, 80)]).write_midi(root / "take1.mid")
    write_tone(root / "take2.wav", 220.0, 1.0)  # no MIDI: kept audio-only
    score_from_notes([Note(0.0, 0.5, 60, 90)]).write_midi(root / "orphan.mid")  # no audio: skipped
    return root


def make_corpus(root: Path) -> Path:
    from mididdsp.score import Note, score_from_notes

    entries = []
    for name, instrument, frequency in (("violin_0000", "violin", 440.0), ("flute_0000", "flute", 880.0)):
        write_tone(root / f"{name}.wav", frequency, 1.0)
        pitch = int(round(69 + 12 * np.log2(frequency / 440.0)))
        score_from_notes([Note(0.1, 0.8, pitch, 100)]).write_midi(root / f"{name}.mid")
        (root / f"{name}.notes.csv").write_text(f"start,end,pitch,velocity,phrase\n0.1,0.8,{pitch},100,0\n")
        entries.append({"name": name, "instrument": instrument, "audio": f"{name}.wav", "midi": f"{name}.mid",
                        "notes": f"{name}.notes.csv", "duration_s": 1.0})
    (root / "manifest.json").write_text(json.dumps({"format": "mididdsp-soundfont-corpus/1", "recordings": entries}))
    return root


def split_items(items) -> tuple[list[Recording], list[SkippedFile]]:
    items = list(items)
    return [i for i in items if isinstance(i, Recording)], [i for i in items if isinstance(i, SkippedFile)]


def test_urmp_layout(tmp_path: Path) -> None:
    root = make_urmp(tmp_path / "urmp")
    assert detect_kind(root) == "urmp"
    recordings, skipped = split_items(iter_source(f"urmp:{root}"))
    by_instrument = {r.instrument: r for r in recordings}
    assert sorted(by_instrument) == ["flute", "violin"]  # AuMix ignored, abbreviations mapped
    violin = by_instrument["violin"]
    assert violin.notes_path.name == "Notes_1_vn_01_Duet.txt" and violin.midi_path is None
    assert violin.id == "urmp/01_Duet_vn_fl/AuSep_1_vn_01_Duet"
    assert [s.path.name for s in skipped] == ["Notes_3_vc_01_Duet.txt"]
    notes = read_notes(violin.notes_path)
    assert [(n.start, n.end, n.pitch) for n in notes] == [(0.1, pytest.approx(0.5), 69), (0.6, pytest.approx(0.9), 71)]


def test_urmp_notes_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "Notes_1_vn_x.txt"
    path.write_text("0.0 440 0.5\n0.5 abc 0.5\n")
    with pytest.raises(InputFileError, match=r"Notes_1_vn_x.txt:2"):
        read_urmp_notes(path)


def test_audio_folder_labels_and_spec(tmp_path: Path) -> None:
    write_tone(tmp_path / "lib" / "cello" / "a.wav", 110.0, 0.2)
    write_tone(tmp_path / "lib" / "cello" / "deep" / "b.flac", 110.0, 0.2)
    write_tone(tmp_path / "lib" / "flute" / "c.wav", 880.0, 0.2)
    (tmp_path / "lib" / "flute" / "readme.txt").write_text("not audio")
    root = tmp_path / "lib"
    assert detect_kind(root) == "audio"
    recordings, _ = split_items(iter_source(str(root)))
    assert {(r.id, r.instrument) for r in recordings} == {
        ("lib/cello/a", "cello"), ("lib/cello/deep/b", "deep"), ("lib/flute/c", "flute")}
    named, _ = split_items(iter_source(f"audio:{root}:viola"))
    assert {r.instrument for r in named} == {"viola"} and len(named) == 3
    single, _ = split_items(iter_source(str(root / "flute" / "c.wav")))
    assert [(r.id, r.instrument) for r in single] == [("flute/c", "flute")]


def test_pairs(tmp_path: Path) -> None:
    root = make_pairs(tmp_path / "pairs")
    assert detect_kind(root) == "pairs"
    recordings, skipped = split_items(iter_source(f"pairs:{root}:violin"))
    by_stem = {r.audio_path.stem: r for r in recordings}
    assert by_stem["take1"].midi_path == root / "take1.mid" and by_stem["take2"].midi_path is None
    assert {r.instrument for r in recordings} == {"violin"}
    assert [s.path.name for s in skipped] == ["orphan.mid"]


def test_corpus(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "corpus")
    assert detect_kind(root) == "corpus"
    recordings, skipped = split_items(iter_source(str(root)))
    assert not skipped
    assert {(r.id, r.instrument) for r in recordings} == {("corpus/violin_0000", "violin"),
                                                           ("corpus/flute_0000", "flute")}
    violin = next(r for r in recordings if r.instrument == "violin")
    assert violin.midi_path.name == "violin_0000.mid" and violin.notes_path.name == "violin_0000.notes.csv"
    notes = read_notes(violin.notes_path)
    assert [(n.start, n.end, n.pitch, n.velocity) for n in notes] == [(0.1, 0.8, 69, 100)]


@pytest.mark.parametrize("manifest_text, reason", [
    ("{ half written", "not a readable corpus manifest.json"),
    (json.dumps({"format": "mididdsp-soundfont-corpus/1", "recordings": []}), "no recordings listed"),
])
def test_bad_corpus_manifest_is_one_skipped_file_not_an_error(tmp_path: Path, manifest_text: str, reason: str) -> None:
    root = make_corpus(tmp_path / "corpus")
    (root / "manifest.json").write_text(manifest_text)
    assert detect_kind(root) == "corpus"
    recordings, skipped = split_items(iter_source(f"corpus:{root}"))  # no exception
    assert recordings == []
    assert [s.path for s in skipped] == [root / "manifest.json"]
    assert reason in skipped[0].reason and "corpus source skipped" in skipped[0].reason


def test_parse_source_errors(tmp_path: Path) -> None:
    with pytest.raises(MididdspError, match="does not exist"):
        parse_source(f"audio:{tmp_path / 'missing'}")
    write_tone(tmp_path / "x.wav", 440.0, 0.1)
    with pytest.raises(MididdspError, match="need a folder"):
        parse_source(f"urmp:{tmp_path / 'x.wav'}")
    spec = parse_source(f"audio:{tmp_path}:horn")
    assert (spec.kind, spec.path, spec.instrument) == ("audio", tmp_path, "horn")


def test_splits_deterministic_stable_and_non_empty() -> None:
    ids = [f"set/rec{i:03d}" for i in range(200)]
    splits = shards.assign_splits(ids, seed=3, valid=0.1, test=0.2)
    assert splits == shards.assign_splits(list(reversed(ids)), seed=3, valid=0.1, test=0.2)
    counts = {name: sum(1 for s in splits.values() if s == name) for name in shards.SPLITS}
    assert 10 <= counts["valid"] <= 32 and 25 <= counts["test"] <= 55  # binomial(200, p), about 4 sigma
    grown = shards.assign_splits(ids + [f"new/rec{i}" for i in range(50)], seed=3, valid=0.1, test=0.2)
    assert all(grown[i] == splits[i] for i in ids)  # adding recordings moves none of the old ones
    assert shards.assign_splits(ids, seed=4, valid=0.1, test=0.2) != splits
    for seed in range(30):  # small sets: every split gets one
        three = shards.assign_splits(["a", "b", "c"], seed=seed)
        assert sorted(three.values()) == ["test", "train", "valid"]
    assert set(shards.assign_splits(["a", "b", "c"], valid=0.0, test=0.0).values()) == {"train"}


def test_shard_round_trip_memmap_and_corruption(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(40000)).astype(np.float32)
    quantized, scale = shards.quantize_audio(audio)
    assert np.max(np.abs(quantized.astype(np.float32) * scale - audio)) <= scale * 0.501
    frames = 40000 // 64 + 1
    arrays = {"audio": quantized, "audio_scale": np.array(scale, np.float32), "notes": np.zeros((0, 4)),
              "pitch_hist": np.zeros(1280, np.int64), "loudness_hist": np.zeros(320, np.int64)}
    arrays |= {name: rng.standard_normal(frames).astype(np.float32) for name in shards.FRAME_ARRAYS}
    meta = {"format_version": shards.SHARD_FORMAT_VERSION, "id": "x", "n_samples": 40000, "n_frames": frames}
    path = tmp_path / "shards" / shards.shard_name("x")
    shards.write_shard(path, arrays, meta)
    opened = shards.open_shard(path)
    assert isinstance(opened["audio"], np.memmap)
    np.testing.assert_array_equal(opened["audio"][100:200], quantized[100:200])
    np.testing.assert_array_equal(opened["f0_hz"], arrays["f0_hz"])
    assert float(opened["audio_scale"]) == pytest.approx(scale)
    assert shards.read_meta(path)["id"] == "x"
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        shards.read_meta(truncated)
    with pytest.raises((ValueError, zipfile.BadZipFile)):
        shards.open_shard(truncated)
    assert not list((tmp_path / "shards").glob(".*"))  # no temp file left behind


def test_histogram_statistics_match_numpy() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(60.0, 5.0, 20000)
    counts = shards.histogram(values, shards.PITCH_RANGE, shards.PITCH_BIN_WIDTH)
    summary = shards._summary_from_histogram(counts, values.sum(), (values ** 2).sum(), shards.PITCH_RANGE,
                                             shards.PITCH_BIN_WIDTH, 1.0)
    assert summary["mean"] == pytest.approx(values.mean(), abs=1e-3)
    assert summary["std"] == pytest.approx(values.std(), abs=1e-3)
    for q in ("5", "50", "95"):
        assert summary["percentiles"][q] == pytest.approx(np.percentile(values, float(q)), abs=0.1)
    assert sum(summary["histogram"]["counts"]) == 20000
