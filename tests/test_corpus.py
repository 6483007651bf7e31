"""Tests of the SoundFont corpus: melodies, the rule-based performer (its MIDI encodes its ground truth) and, with
the FluidSynth program, the rendered corpus (files, durations, measured vibrato rate and CC11 gain)."""
from __future__ import annotations

import json

import mido
import numpy as np
import pytest
import scipy.signal
import soundfile

from mididdsp.datasets import corpus, melodies, performer
from mididdsp.datasets.melodies import Melody

# Tests marked fluidsynth are skipped without FluidSynth + FluidR3_GM, or fail with MIDIDDSP_REQUIRE_FLUIDSYNTH=1
# (as in CI): see tests/conftest.py.


def _monophonic(notes) -> bool:
    return all(a[1] <= b[0] + 1e-9 and a[0] < a[1] for a, b in zip(notes, notes[1:])) and notes[-1][0] < notes[-1][1]


# ------------------------------------------------------------------------------------------------ melodies
def test_generated_melodies_are_deterministic_monophonic_and_fit_every_range():
    first = melodies.generate_melody(np.random.default_rng(7), "g")
    assert first == melodies.generate_melody(np.random.default_rng(7), "g")
    assert first != melodies.generate_melody(np.random.default_rng(8), "g")
    for seed in range(20):
        melody = melodies.generate_melody(np.random.default_rng(seed), "g")
        assert _monophonic(melody.notes) and melody.phrase_starts[0] == 0 and len(melody.phrases()) >= 2
        for instrument, (low, high) in melodies.INSTRUMENT_RANGES.items():
            moved = melodies.transpose_to_range(melody, low, high)
            pitches = np.array([p for _, _, p in moved.notes])
            assert pitches.min() >= low and pitches.max() <= high, instrument
            # Moved by octaves only: same pitch classes, same timing.
            assert np.all((pitches - np.array([p for _, _, p in melody.notes])) % 12 == 0)
            assert [n[:2] for n in moved.notes] == [n[:2] for n in melody.notes]


def test_bach_chorale_gives_four_monophonic_voices_in_order_of_register():
    voices = melodies.chorale_voices(melodies.bach_chorale_names()[0], tempo_qpm=60.0)
    assert [v.melody_id.split(":")[1] for v in voices] == ["Soprano", "Alto", "Tenor", "Bass"]
    medians = [np.median([p for _, _, p in v.notes]) for v in voices]
    assert medians == sorted(medians, reverse=True)
    for voice in voices:
        assert _monophonic(voice.notes) and len(voice.phrases()) >= 3  # fermatas end phrases
    # At 60 quarter notes per minute a quarter note lasts 1 s: the first soprano note is a quarter (score: G4).
    assert voices[0].notes[0] == (0.0, 1.0, 67)


def test_mammoth_tune_tempo_gives_the_requested_median_note_length():
    tune = melodies.mammoth_tune(melodies.mammoth_paths()[1], median_note_s=0.3)
    assert tune.source == "mammoth" and _monophonic(tune.notes) and len(tune.notes) > 30
    assert np.median([e - s for s, e, _ in tune.notes]) == pytest.approx(0.3, abs=1e-3)  # tempo not clipped here


# ------------------------------------------------------------------------------------------------ performer
def _test_melody() -> Melody:
    notes = ((0.1, 0.3, 60), (0.3, 1.5, 62), (1.5, 1.7, 64), (2.0, 4.0, 65), (4.0, 4.2, 64), (4.5, 6.0, 67))
    return Melody("test", "test", 60.0, notes, (0, 3))


def test_performer_is_deterministic_for_a_seed(tmp_path):
    style = performer.STYLES["violin"]
    a = performer.perform(_test_melody(), 40, style, np.random.default_rng(1))
    b = performer.perform(_test_melody(), 40, style, np.random.default_rng(1))
    c = performer.perform(_test_melody(), 40, style, np.random.default_rng(2))
    assert a == b and a != c
    a.write_midi(tmp_path / "a.mid")
    b.write_midi(tmp_path / "b.mid")
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()


def _midi_streams(path):
    """Absolute-time (s) note, CC and pitch-bend events of a one-track MIDI file."""
    notes, controls, bends, now = [], [], [], 0.0
    open_notes = {}
    for message in mido.MidiFile(path):
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            open_notes[message.note] = (round(now, 6), message.velocity)
        elif message.type in ("note_off", "note_on"):
            start, velocity = open_notes.pop(message.note)
            notes.append((start, round(now, 6), message.note, velocity))
        elif message.type == "control_change":
            controls.append((round(now, 6), message.control, message.value))
        elif message.type == "pitchwheel":
            bends.append((round(now, 6), message.pitch))
    return sorted(notes), controls, bends, now


def _held(events, times):
    """Value of a step-held event stream [(time, value)] at ``times``."""
    event_times = np.array([t for t, _ in events])
    values = np.array([v for _, v in events])
    return values[np.searchsorted(event_times, np.asarray(times) + 1e-9, side="right") - 1]


def test_midi_file_encodes_the_recorded_ground_truth(tmp_path):
    style = performer.PerformanceStyle(vibrato_probability=1.0)
    performance = performer.perform(_test_melody(), 42, style, np.random.default_rng(3), tail_s=0.5)
    path = tmp_path / "p.mid"
    performance.write_midi(path)
    notes, controls, bends, end = _midi_streams(path)
    assert end == pytest.approx(performance.duration, abs=1e-6)
    # RPN 0 (pitch-bend sensitivity) is set to the recorded range before anything else.
    assert [(c, v) for _, c, v in controls[:4]] == [(101, 0), (100, 0), (6, performance.pitch_bend_range), (38, 0)]
    assert notes == [(n.start, n.end, n.pitch, n.velocity) for n in performance.notes]
    cc11 = [(t, v) for t, c, v in controls if c == 11]
    vibrato_notes = 0
    for note in performance.notes:
        grid = np.round(note.start + performer.CONTROL_STEP_S * np.arange(int(np.ceil((note.end - note.start) / 0.01 - 1e-9))), 3)
        # CC11: the recorded mean gain and peak position are those of the values in the file.
        values = _held(cc11, grid)
        assert np.mean(40 * np.log10(values / 127)) == pytest.approx(note.mean_gain_db, abs=1e-3)
        position = (grid - note.start) / (note.end - note.start)
        assert np.mean(position[values == values.max()]) == pytest.approx(note.peak_position, abs=1e-3)
        # Pitch bend: the recorded vibrato (depth, rate, delay) to within one bend step (0.024 cents).
        cents = performer.bend_to_cents(_held(bends, grid), performance.pitch_bend_range)
        expected = performer.vibrato_cents(grid - note.start, note.vibrato_depth_cents, note.vibrato_rate_hz,
                                           note.vibrato_delay_s)
        assert np.max(np.abs(cents - expected)) <= 100.0 * performance.pitch_bend_range / 8192
        if note.end - note.start < performer.MIN_VIBRATO_NOTE_S:
            assert note.vibrato_depth_cents == 0 and np.all(cents == 0)
        else:
            vibrato_notes += 1
            steady = grid - note.start >= note.vibrato_delay_s + performer.VIBRATO_RAMP_S
            assert np.max(np.abs(cents[steady])) == pytest.approx(note.vibrato_depth_cents, rel=0.05)
            assert np.all(cents[grid - note.start < note.vibrato_delay_s] == 0)
    assert vibrato_notes == 3


def test_cc11_shapes_peak_where_recorded():
    u = np.linspace(0, 1, 101)
    swell = performer.cc11_curve_db("swell", u, -2.0, 10.0, 0.3)
    assert u[np.argmax(swell)] == pytest.approx(0.3) and swell.max() == pytest.approx(-2.0)
    assert swell[0] == pytest.approx(-12.0) and swell[-1] == pytest.approx(-12.0)
    assert np.all(np.diff(performer.cc11_curve_db("crescendo", u, 0.0, 6.0, 0.5)) > 0)
    assert np.all(np.diff(performer.cc11_curve_db("decrescendo", u, 0.0, 6.0, 0.5)) < 0)
    values = np.arange(1, 128)
    assert np.array_equal(performer.db_to_cc11(performer.cc11_to_db(values)), values)  # exact round trip


# ------------------------------------------------------------------------------------------------ FluidSynth
def _vibrato_rate_hz(audio: np.ndarray, f_nominal: float, sample_rate: int = 16000) -> float:
    """Rate of the f0 modulation: instantaneous frequency of the band-passed fundamental, best-fitting sinusoid."""
    sos = scipy.signal.butter(4, [f_nominal * 2 ** (-3 / 12), f_nominal * 2 ** (3 / 12)], "band", fs=sample_rate,
                              output="sos")
    phase = np.unwrap(np.angle(scipy.signal.hilbert(scipy.signal.sosfiltfilt(sos, audio))))
    f0 = scipy.signal.medfilt(np.diff(phase) * sample_rate / (2 * np.pi), 31)
    cents = 1200 * np.log2(np.maximum(f0[::64], 1.0) / f_nominal)  # 250 Hz frames are plenty for a 3-9 Hz modulation
    t = np.arange(cents.size) * 64 / sample_rate
    errors = []
    rates = np.arange(3.0, 9.0, 0.01)
    for rate in rates:
        basis = np.stack([np.sin(2 * np.pi * rate * t), np.cos(2 * np.pi * rate * t), np.ones_like(t)], 1)
        coef = np.linalg.lstsq(basis, cents, rcond=None)[0]
        errors.append(np.sum((basis @ coef - cents) ** 2))
    return float(rates[int(np.argmin(errors))])


@pytest.mark.fluidsynth
def test_rendered_vibrato_rate_and_cc11_gain_match_the_ground_truth(tmp_path):
    # Trumpet: its FluidR3 samples carry almost no vibrato of their own (strings and flute do, see corpus.py).
    melody = Melody("test", "long note", 60.0, ((0.2, 3.2, 67),), (0,))
    style = performer.PerformanceStyle(vibrato_probability=1.0, vibrato_delay_s=(0.2, 0.3))
    performance = performer.perform(melody, 56, style, np.random.default_rng(0))
    note = performance.notes[0]
    performance.write_midi(tmp_path / "v.mid")
    audio = corpus.render_midi(tmp_path / "v.mid", duration_s=performance.duration)
    assert audio.shape == (round(performance.duration * 16000),)
    steady = slice(int((note.start + note.vibrato_delay_s + 0.2) * 16000), int((note.end - 0.05) * 16000))
    rate = _vibrato_rate_hz(audio[steady], 440 * 2 ** ((67 - 69) / 12))
    assert rate == pytest.approx(note.vibrato_rate_hz, abs=0.5)
    # CC11 at 64 instead of 127: the law says 40 log10(64 / 127) = -11.9 dB.
    levels = []
    for value in (127, 64):
        flat = performer.Performance(56, (note,), ((0.0, value),), (), 3.5)
        flat.write_midi(tmp_path / "g.mid")
        x = corpus.render_midi(tmp_path / "g.mid", duration_s=3.5)[16000:48000]
        levels.append(20 * np.log10(np.sqrt(np.mean(x ** 2))))
    assert levels[1] - levels[0] == pytest.approx(float(performer.cc11_to_db(64)), abs=0.5)


@pytest.mark.fluidsynth
def test_tiny_corpus_files_durations_determinism_and_resume(tmp_path):
    args = dict(instruments=["flute"], minutes=0.1, seed=0, sources=["generated", "bach"], progress=False)
    manifest = corpus.build_corpus(tmp_path / "a", **args)
    [entry] = manifest["recordings"]
    folder = tmp_path / "a"
    assert entry["instrument"] == "flute" and entry["program"] == 73 and entry["segments"]
    audio, sample_rate = soundfile.read(folder / entry["audio"])
    midi = mido.MidiFile(folder / entry["midi"])
    assert sample_rate == 16000 and audio.ndim == 1
    assert len(audio) == round(midi.length * 16000) == round(entry["duration_s"] * 16000)
    assert 20 * np.log10(np.sqrt(np.mean(audio ** 2))) > -45 and np.max(np.abs(audio)) <= 0.96
    rows = (folder / entry["notes"]).read_text().splitlines()
    assert rows[0].split(",") == list(performer.CSV_COLUMNS)
    assert len(rows) - 1 == entry["n_notes"] == sum(1 for m in midi if m.type == "note_on" and m.velocity > 0)
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    # Same seed, same bytes; a second run over a finished folder renders nothing again.
    corpus.build_corpus(tmp_path / "b", **args)
    for name in (entry["audio"], entry["midi"], entry["notes"], "manifest.json"):
        assert (folder / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    stamp = (folder / entry["audio"]).stat().st_mtime_ns
    corpus.build_corpus(folder, **args)
    assert (folder / entry["audio"]).stat().st_mtime_ns == stamp


def test_missing_soundfont_is_one_clear_line(tmp_path):
    from mididdsp.errors import MididdspError

    with pytest.raises(MididdspError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        corpus.build_corpus(tmp_path, ["violin"], 0.1, soundfont=tmp_path / "none.sf2", progress=False)


def test_fluidsynth_gate_skips_locally_and_fails_when_required(monkeypatch):
    import shutil

    from conftest import REQUIRE_FLUIDSYNTH_ENV, check_fluidsynth

    monkeypatch.setattr(shutil, "which", lambda name: None)  # as on a machine without the program
    monkeypatch.delenv(REQUIRE_FLUIDSYNTH_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="fluidsynth program is not installed"):
        check_fluidsynth()
    monkeypatch.setenv(REQUIRE_FLUIDSYNTH_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_FLUIDSYNTH_ENV} is set"):
        check_fluidsynth()
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/fluidsynth")
    monkeypatch.setattr(corpus, "DEFAULT_SOUNDFONT", "/nonexistent/FluidR3_GM.sf2")
    with pytest.raises(pytest.fail.Exception, match="SoundFont /nonexistent/FluidR3_GM.sf2 is missing"):
        check_fluidsynth()


@pytest.mark.fluidsynth
def test_soundfonts_take_turns_each_recording_names_its_own_and_resume_respects_them(tmp_path):
    # Two SoundFonts: FluidR3 under its own name and, by a link, under another one.
    other = tmp_path / "Other_GM.sf2"
    other.symlink_to(corpus.DEFAULT_SOUNDFONT)
    args = dict(instruments=["flute"], minutes=1.0, seed=0, sources=["generated"], progress=False)
    manifest = corpus.build_corpus(tmp_path / "c", soundfont=[corpus.DEFAULT_SOUNDFONT, str(other)], **args)
    names = [entry["soundfont"] for entry in manifest["recordings"]]
    assert len(names) >= 2 and names[0::2] == ["FluidR3_GM.sf2"] * len(names[0::2])
    assert names[1::2] == ["Other_GM.sf2"] * len(names[1::2])
    assert manifest["soundfont"] == [corpus.DEFAULT_SOUNDFONT, str(other)]
    # The same plan with one SoundFont keeps the recordings FluidR3 played and renders the others again.
    first, second = manifest["recordings"][:2]
    stamps = {entry["name"]: (tmp_path / "c" / entry["audio"]).stat().st_mtime_ns for entry in (first, second)}
    again = corpus.build_corpus(tmp_path / "c", **args)
    assert [entry["soundfont"] for entry in again["recordings"]] == ["FluidR3_GM.sf2"] * len(names)
    assert (tmp_path / "c" / first["audio"]).stat().st_mtime_ns == stamps[first["name"]]
    assert (tmp_path / "c" / second["audio"]).stat().st_mtime_ns != stamps[second["name"]]
    with pytest.raises(corpus.MididdspError, match="share a file name"):
        corpus.build_corpus(tmp_path / "d", soundfont=[corpus.DEFAULT_SOUNDFONT, corpus.DEFAULT_SOUNDFONT], **args)
