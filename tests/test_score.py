"""mididdsp.score: MIDI reading (exact times through tempo maps), repairs, voices, frames, NoteSequence, errors."""
from __future__ import annotations

import warnings

import mido
import numpy as np
import pretty_midi
import pytest

from mididdsp.errors import InputFileError, MididdspError
from mididdsp.score import (MidiRepairWarning, Note, Score, gm_program_family, gm_program_name, gm_program_number,
                            note_frames, read_midi, score_from_notes, split_voices)


def _track(events, name=None):
    """Absolute-tick (tick, message) pairs -> a mido track with delta times."""
    track = mido.MidiTrack()
    if name:
        track.append(mido.MetaMessage("track_name", name=name, time=0))
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):  # stable: same-tick order as given
        track.append(msg.copy(time=tick - now))
        now = tick
    return track


def _on(ch, pitch, vel=100):
    return mido.Message("note_on", channel=ch, note=pitch, velocity=vel)


def _off(ch, pitch):
    return mido.Message("note_off", channel=ch, note=pitch, velocity=0)


def _tempo_file(path, midi_type=1):
    """PPQ 480; 120 bpm for 2 beats (1 s), then 60 bpm (1 beat = 1 s), then 240 bpm from tick 1440 (2 s)."""
    tempo = [(0, mido.MetaMessage("set_tempo", tempo=500_000)),
             (0, mido.MetaMessage("time_signature", numerator=3, denominator=4)),
             (960, mido.MetaMessage("set_tempo", tempo=1_000_000)),
             (960, mido.MetaMessage("time_signature", numerator=6, denominator=8)),
             (1440, mido.MetaMessage("set_tempo", tempo=250_000))]
    notes = [(0, mido.Message("program_change", channel=0, program=40)),
             (0, _on(0, 67, 90)), (480, _off(0, 67)),          # 0.0 - 0.5 s
             (480, _on(0, 69, 80)), (1200, _off(0, 69)),       # 0.5 - 1.5 s (crosses the 120 -> 60 change)
             (1200, _on(0, 71, 70)), (1920, _off(0, 71))]      # 1.5 - 2.0 + 480 ticks at 240 bpm = 2.25 s
    mid = mido.MidiFile(type=midi_type, ticks_per_beat=480)
    if midi_type == 1:
        mid.tracks += [_track(tempo), _track(notes, name="Violin I")]
    else:
        mid.tracks.append(_track(tempo + notes, name="Violin I"))
    mid.save(path)
    return [(0.0, 0.5, 67, 90), (0.5, 1.5, 69, 80), (1.5, 2.25, 71, 70)]


def _as_tuples(notes):
    return [(n.start, n.end, n.pitch, n.velocity) for n in notes]


def _close(got, expected, atol=1e-12):
    """Lists of number tuples equal within ``atol`` (same shape)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return got.shape == expected.shape and np.allclose(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("midi_type", [0, 1])
def test_tempo_changes_give_exact_times(tmp_path, midi_type):
    path = tmp_path / f"tempo{midi_type}.mid"
    expected = _tempo_file(path, midi_type)
    score = read_midi(path)
    assert len(score.tracks) == 1
    track = score.tracks[0]
    assert (track.name, track.program, track.is_drum) == ("Violin I", 40, False)
    assert _close(_as_tuples(track.notes), expected)
    assert score.duration == pytest.approx(2.25, abs=1e-12)
    assert score.repairs == []
    # pretty_midi's own reading of the same file agrees
    pm_notes = pretty_midi.PrettyMIDI(str(path)).instruments[0].notes
    assert _close([(n.start, n.end) for n in pm_notes], [e[:2] for e in expected], 1e-9)


def test_type0_channels_become_tracks(tmp_path):
    events = [(0, mido.Message("program_change", channel=0, program=73)),
              (0, _on(0, 72)), (240, _off(0, 72)),
              (0, _on(9, 36, 120)), (60, _off(9, 36)), (240, _on(9, 38, 110)), (300, _off(9, 38))]
    mid = mido.MidiFile(type=0, ticks_per_beat=240)  # 120 bpm default: 480 ticks per second
    mid.tracks.append(_track(events))
    mid.save(tmp_path / "t0.mid")
    score = read_midi(tmp_path / "t0.mid")
    flute, drums = score.tracks
    assert (flute.program, flute.is_drum) == (73, False) and drums.is_drum
    assert _as_tuples(flute.notes) == [(0.0, 0.5, 72, 100)]
    assert _close(_as_tuples(drums.notes), [(0.0, 0.125, 36, 120), (0.5, 0.625, 38, 110)])


def test_smpte_time_division(tmp_path):
    mid = mido.MidiFile(type=1, ticks_per_beat=-(25 << 8) + 40)  # 25 fps x 40 ticks: 1000 ticks per s
    mid.tracks.append(_track([(0, mido.MetaMessage("set_tempo", tempo=1_000_000)),  # ignored under SMPTE
                              (250, _on(0, 60)), (1750, _off(0, 60))]))
    mid.save(tmp_path / "smpte.mid")
    assert _as_tuples(read_midi(tmp_path / "smpte.mid").tracks[0].notes) == [(0.25, 1.75, 60, 100)]


def test_pretty_midi_chords_read_back_exactly(tmp_path):
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=100.0)
    cello = pretty_midi.Instrument(program=42, name="cello")
    for start, pitches in [(0.0, (48, 55, 64)), (0.6, (50,)), (1.2, (43, 59))]:
        for p in pitches:
            cello.notes.append(pretty_midi.Note(velocity=p, pitch=p, start=start, end=start + 0.6))
    pm.instruments.append(cello)
    pm.write(str(tmp_path / "chords.mid"))
    oracle = pretty_midi.PrettyMIDI(str(tmp_path / "chords.mid")).instruments[0].notes
    score = read_midi(tmp_path / "chords.mid")
    track = score.tracks[0]
    assert (track.name, track.program) == ("cello", 42)
    got = sorted(_as_tuples(track.notes))
    assert _close(got, sorted((n.start, n.end, n.pitch, n.velocity) for n in oracle))


def test_pitch_bend_range_rpn_and_controls(tmp_path):
    events = [(0, mido.Message("control_change", channel=0, control=7, value=90)),
              (0, _on(0, 60)), (480, mido.Message("pitchwheel", channel=0, pitch=4096)),   # +1 st (range 2)
              (720, mido.Message("control_change", channel=0, control=101, value=0)),
              (720, mido.Message("control_change", channel=0, control=100, value=0)),
              (720, mido.Message("control_change", channel=0, control=6, value=12)),      # range 12 st
              (720, mido.Message("control_change", channel=0, control=38, value=0)),
              (960, mido.Message("pitchwheel", channel=0, pitch=-2048)),                   # -3 st (range 12)
              (960, mido.Message("control_change", channel=0, control=11, value=64)),
              (960, mido.Message("control_change", channel=0, control=1, value=10)),
              (1440, _off(0, 60))]
    mid = mido.MidiFile(type=1, ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    mid.tracks.append(_track(events))
    mid.save(tmp_path / "bend.mid")
    track = read_midi(tmp_path / "bend.mid").tracks[0]
    assert _close(track.pitch_bends, [(0.5, 1.0), (1.0, -3.0)])
    assert track.controls == {7: [(0.0, 90.0)], 11: [(1.0, 64.0)], 1: [(1.0, 10.0)]}
    frames = track.control_frames(n_frames=375)  # 1.5 s at 250 Hz
    bend = np.zeros(375, np.float32)
    bend[125:250], bend[250:] = 1.0, -3.0  # frame 125 = 0.5 s, frame 250 = 1.0 s
    np.testing.assert_array_equal(frames["pitch_bend"], bend)
    np.testing.assert_array_equal(frames["cc7"], np.full(375, 90, np.float32))
    np.testing.assert_array_equal(frames["cc11"], np.where(np.arange(375) >= 250, 64, 127).astype(np.float32))
    np.testing.assert_array_equal(frames["cc1"], np.where(np.arange(375) >= 250, 10, 0).astype(np.float32))


def test_write_read_round_trip_is_exact(tmp_path):
    # times on the 1/16000 s grid survive exactly; bends within one 14-bit step of their range
    notes = [(0.0, 0.25, 60, 100), (0.25, 0.5, 62, 64), (0.5, 1.0, 64, 1), (0.75, 1.3125, 55, 127)]
    score = score_from_notes(notes, program=71, name="clarinet")
    track = score.tracks[0]
    track.pitch_bends = [(0.1, 0.5), (0.2, -1.25), (0.9, 7.0)]
    track.controls = {11: [(0.0, 100.0), (0.5, 30.0)], 1: [(0.3, 64.0)]}
    drums = score_from_notes([(0.0, 0.1, 36, 90)], program=0, is_drum=True).tracks[0]
    score = Score([track, drums], score.duration)
    score.write_midi(tmp_path / "out.mid")
    back = read_midi(tmp_path / "out.mid")
    assert [(t.name, t.program, t.is_drum) for t in back.tracks] == [("clarinet", 71, False), ("", 0, True)]
    assert _as_tuples(back.tracks[0].notes) == sorted(notes)
    assert _as_tuples(back.tracks[1].notes) == [(0.0, 0.1, 36, 90)]
    assert _close(back.tracks[0].pitch_bends, track.pitch_bends, 7 / 8192)  # range 7 written by RPN
    assert back.tracks[0].controls == track.controls
    assert back.duration == score.duration == 1.3125
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(MididdspError, match="does not exist"):
        score.write_midi(tmp_path / "no" / "such" / "dir.mid")


def test_same_pitch_overlap_and_zero_length_repairs(tmp_path):
    # re-struck A4 before its note-off (FIFO pairing keeps the second note's own end), a zero-length note,
    # a duplicate note-on and a note never switched off
    events = [(0, _on(0, 69)), (480, _on(0, 69, 80)), (500, _off(0, 69)), (960, _off(0, 69)),
              (1000, _on(0, 72)), (1000, _off(0, 72)),
              (1100, _on(0, 74)), (1100, _on(0, 74)), (1200, _off(0, 74)), (1300, _off(0, 74)),
              (1400, _on(0, 76)), (1920, mido.Message("control_change", channel=0, control=64, value=0))]
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    mid.tracks.append(_track(events))
    mid.save(tmp_path / "overlap.mid")
    with pytest.warns(MidiRepairWarning, match="overlap.mid"):
        score = read_midi(tmp_path / "overlap.mid")
    t = 1 / 960  # seconds per tick at 120 bpm, 480 ppq
    assert _close(_as_tuples(score.tracks[0].notes),
        [(0.0, 480 * t, 69, 100), (480 * t, 960 * t, 69, 80), (1100 * t, 1300 * t, 74, 100),
         (1400 * t, 1920 * t, 76, 100)])
    assert len(score.repairs) == 4
    assert any("zero-length" in r for r in score.repairs) and any("no note-off" in r for r in score.repairs)
    # pretty_midi's reader would have cut the re-struck note to 20 ticks: the reason we pair notes ourselves
    pm_notes = pretty_midi.PrettyMIDI(str(tmp_path / "overlap.mid")).instruments[0].notes
    assert sorted((n.start, n.end) for n in pm_notes if n.pitch == 69)[1] == pytest.approx((480 * t, 500 * t))


def test_split_voices_chords_keep_timing():
    notes = [Note(0.0, 1.0, 60, 80), Note(0.0, 1.0, 64, 80), Note(0.0, 1.0, 67, 80),  # triad
             Note(1.0, 1.5, 72, 90), Note(1.5, 2.0, 71, 90),                             # melody
             Note(1.0, 2.0, 55, 70),                                                     # held bass
             Note(2.0, 2.5, 69, 90), Note(2.0, 2.5, 62, 90)]                             # double stop
    voices = split_voices(notes)
    assert [[n.pitch for n in v] for v in voices] == [[67, 72, 71, 69], [64, 55, 62], [60]]
    assert sorted(_as_tuples(n for v in voices for n in v)) == sorted(_as_tuples(notes))  # no timing moved
    for voice in voices:
        assert all(a.end <= b.start for a, b in zip(voice, voice[1:]))


def test_split_voices_trims_tiny_legato_overlap_only():
    legato = [Note(0.0, 0.505, 60, 80), Note(0.5, 1.0, 62, 80)]        # 5 ms overlap: same voice, trimmed
    assert split_voices(legato) == [[Note(0.0, 0.5, 60, 80), Note(0.5, 1.0, 62, 80)]]
    real = [Note(0.0, 0.52, 60, 80), Note(0.5, 1.0, 62, 80)]           # 20 ms overlap: two voices, untouched
    assert split_voices(real) == [[real[0]], [real[1]]]


def test_note_frames_hand_computed():
    # 250 Hz: frame i is i * 4 ms. Note 0 covers round(0)..round(5)-1 = frames 0-4; note 1 covers
    # round(7.5)=8 .. round(12.5)-1 = 12 (half-up); frames 5-7 and 13-15 are rests.
    notes = [Note(0.0, 0.02, 60, 100), Note(0.03, 0.05, 62, 50)]
    f = note_frames(notes, n_frames=16)
    p = np.array([60] * 5 + [0] * 3 + [62] * 5 + [0] * 3, np.float32)
    np.testing.assert_array_equal(f["pitch"], p)
    np.testing.assert_array_equal(f["onset"], np.isin(np.arange(16), [0, 8]).astype(np.float32))
    np.testing.assert_array_equal(f["offset"], np.isin(np.arange(16), [4, 12]).astype(np.float32))
    np.testing.assert_array_equal(f["note_index"], [0] * 5 + [-1] * 3 + [1] * 5 + [-1] * 3)
    np.testing.assert_allclose(f["position"], [0, .2, .4, .6, .8, 0, 0, 0, 0, .2, .4, .6, .8, 0, 0, 0], atol=1e-7)
    np.testing.assert_array_equal(f["velocity"], np.where(p == 60, 100, np.where(p == 62, 50, 0)))


def test_note_frames_legato_truncation_and_polyphony():
    legato = [Note(0.0, 0.025, 60, 100), Note(0.02, 0.04, 62, 100)]  # 5 ms overlap: next note takes over
    f = note_frames(legato, n_frames=8)
    np.testing.assert_array_equal(f["note_index"], [0, 0, 0, 0, 0, 1, 1, 1])  # note 1 is cut at the end
    np.testing.assert_array_equal(f["offset"], [0, 0, 0, 0, 1, 0, 0, 0])  # note 1 runs past frame 7: no offset
    np.testing.assert_array_equal(f["onset"], [1, 0, 0, 0, 0, 1, 0, 0])
    one = note_frames([Note(0.0101, 0.0102, 70, 9)], n_frames=4)  # shorter than a frame: still one frame
    np.testing.assert_array_equal(one["pitch"], [0, 0, 0, 70])
    assert one["onset"][3] == one["offset"][3] == 1
    with pytest.raises(ValueError, match="split_voices"):
        note_frames([Note(0.0, 1.0, 60, 100), Note(0.5, 1.0, 64, 100)], n_frames=10)


def test_note_sequence_round_trip(tmp_path):
    score = score_from_notes([(0.0, 0.5, 60, 100), (0.5, 1.0, 64, 70), (0.25, 0.75, 67, 60)], program=40,
                             name="vln")
    score.tracks[0].pitch_bends = [(0.1, 0.5), (0.4, -3.0)]
    score.tracks[0].controls = {11: [(0.2, 80.0)]}
    back = Score.from_note_sequence(score.to_note_sequence())
    assert back.tracks[0].notes == score.tracks[0].notes and back.tracks[0].name == "vln"
    assert _close(back.tracks[0].pitch_bends, score.tracks[0].pitch_bends, 3 / 8192)
    assert back.tracks[0].controls == score.tracks[0].controls and back.duration == 1.0
    # note_seq's own MIDI reader gives the same notes as read_midi
    import note_seq
    path = tmp_path / "ns.mid"
    expected = _tempo_file(path)
    via_ns = Score.from_note_sequence(note_seq.midi_file_to_note_sequence(str(path)))
    assert _close(_as_tuples(via_ns.tracks[0].notes), expected, 1e-9)
    assert via_ns.tracks[0].program == 40


def test_bad_files_raise_one_line_input_error(tmp_path):
    text = tmp_path / "notes.mid"
    text.write_text("this is not a MIDI file\n")
    good = tmp_path / "good.mid"
    _tempo_file(good)
    data = good.read_bytes()
    empty = tmp_path / "empty.mid"
    mid = mido.MidiFile(type=1)
    mid.tracks.append(_track([(0, mido.MetaMessage("set_tempo", tempo=400_000))], name="nothing"))
    mid.save(empty)
    cases = [text, tmp_path / "missing.mid", empty]
    for cut in (10, 30, len(data) // 2, len(data) - 1):
        (tmp_path / f"cut{cut}.mid").write_bytes(data[:cut])
        cases.append(tmp_path / f"cut{cut}.mid")
    for path in cases:
        with pytest.raises(InputFileError) as err:
            read_midi(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message
    with pytest.raises(InputFileError, match="no notes"):
        read_midi(empty)


def test_score_from_notes_checks_and_edits():
    with pytest.raises(MididdspError):
        score_from_notes([(0.0, 1.0, 128, 100)])
    with pytest.raises(MididdspError):
        score_from_notes([(-0.1, 1.0, 60, 100)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = score_from_notes([(0.0, 1.0, 60, 100), (0.5, 1.5, 60, 90), (2.0, 2.0, 62, 90)])
    assert [issubclass(w.category, MidiRepairWarning) for w in caught] == [True]
    assert _as_tuples(score.tracks[0].notes) == [(0.0, 0.5, 60, 100), (0.5, 1.5, 60, 90)]
    assert score.transposed(3).tracks[0].notes[0].pitch == 63
    stretched = score.stretched(2.0)
    assert _as_tuples(stretched.tracks[0].notes)[1] == (1.0, 3.0, 60, 90) and stretched.duration == 3.0
    voices = score_from_notes([(0, 1, 60, 100), (0, 1, 64, 100)]).voices()
    assert [(v.track_index, v.voice_index, v.notes[0].pitch) for v in voices] == [(0, 0, 64), (0, 1, 60)]


def test_general_midi_names():
    assert gm_program_name(40) == "Violin" and gm_program_family(40) == "Strings"
    assert gm_program_number("violin") == 40 and gm_program_name(73) == "Flute"
    with pytest.raises(MididdspError):
        gm_program_name(128)
    with pytest.raises(MididdspError):
        gm_program_number("kazoo-o-matic")
