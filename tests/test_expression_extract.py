"""`mididdsp extract` on a tiny synthetic case (a tone with vibrato + its MIDI), and its bad-input errors."""
import math
from pathlib import Path

import numpy as np
import pytest

from mididdsp.audio import save_audio
from mididdsp.cli import main
from mididdsp.errors import MididdspError
from mididdsp.expression.table import NoteExpression
from mididdsp.models import save_model
from mididdsp.score import score_from_notes
from mididdsp.synthesis.autoencoder import DDSPAutoencoder

SR = 16000
NOTES = [(0.2, 0.9, 69, 80), (1.0, 1.5, 72, 60)]
VIBRATO = (5.5, 30.0)  # Hz, cents, on the first note


def tone(seconds=1.8):
    """Harmonic tone playing NOTES, the first with a sinusoidal vibrato, the second 10 dB quieter."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = np.zeros_like(t)
    gain = np.zeros_like(t)
    for (start, end, pitch, _), level in zip(NOTES, (0.3, 0.095)):
        inside = (t >= start) & (t < end)
        f0[inside] = 440.0 * 2 ** ((pitch - 69) / 12)
        gain[inside] = level
    first = (t >= NOTES[0][0]) & (t < NOTES[0][1])
    rate, cents = VIBRATO
    f0[first] *= 2 ** (cents * np.sin(2 * math.pi * rate * (t[first] - NOTES[0][0])) / 1200)
    phase = 2 * math.pi * np.cumsum(f0) / SR
    audio = sum(np.sin(k * phase) / k for k in range(1, 6)) * gain
    ramp = np.convolve(gain > 0, np.ones(160) / 160, mode="same")  # 10 ms fades, no clicks
    return (audio * ramp).astype(np.float32)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    save_audio(root / "tone.wav", tone())
    score_from_notes(NOTES).write_midi(root / "tone.mid")
    model = DDSPAutoencoder({"hidden_size": 16, "reverb": None, "n_instruments": 2})
    save_model(model, root / "model", {"instruments": {"violin": 0, "flute": 1}})
    return root


def test_extract_with_a_model_writes_one_row_per_note_and_a_plot(case, tmp_path):
    out, plot = tmp_path / "expr.csv", tmp_path / "expr.png"
    assert main(["extract", str(case / "tone.wav"), "--midi", str(case / "tone.mid"), "-o", str(out),
                 "--model", str(case / "model"), "--instrument", "flute", "--plot", str(plot)]) == 0
    table = NoteExpression.load(out)
    assert table.pitch.tolist() == [69, 72] and table.instrument.tolist() == ["flute", "flute"]
    assert table.start.tolist() == pytest.approx([0.2, 1.0], abs=1e-4)
    assert ((table.controls_array() >= 0) & (table.controls_array() <= 1)).all()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("program,expected", [(73, "flute"), (0, "violin")])
def test_the_default_instrument_is_the_midi_program_when_the_model_has_it(case, tmp_path, program, expected):
    midi, out = tmp_path / f"p{program}.mid", tmp_path / "expr.csv"
    score_from_notes(NOTES, program=program).write_midi(midi)  # 73 Flute; 0 Acoustic Grand Piano: not in the model
    assert main(["extract", str(case / "tone.wav"), "--midi", str(midi), "-o", str(out),
                 "--model", str(case / "model")]) == 0
    assert NoteExpression.load(out).instrument.tolist() == [expected, expected]


def test_extract_analysis_controls_measure_the_known_expression(case, tmp_path):
    out = tmp_path / "expr.json"
    assert main(["extract", str(case / "tone.wav"), "--midi", str(case / "tone.mid"), "-o", str(out),
                 "--controls", "analysis"]) == 0
    table = NoteExpression.load(out)
    rate, cents = VIBRATO
    assert table[0, "vibrato_rate_hz"] == pytest.approx(rate, abs=0.3)
    assert table[0, "vibrato_extent_cents"] == pytest.approx(cents, abs=8.0)  # CREPE smooths a little
    assert table[1, "vibrato_extent_cents"] < 5.0
    assert table[0, "volume_db"] - table[1, "volume_db"] == pytest.approx(10.0, abs=1.5)
    assert table.instrument.tolist() == ["violin", "violin"]  # the track's General MIDI program


def bad_input(capsys, *args):
    """Run ``mididdsp extract`` on a bad input: exit 1 with exactly one ``error:`` line on stderr, nothing on stdout."""
    code = main(["extract", *map(str, args)])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 1, captured
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    return lines[0]


def test_bad_inputs_give_one_line_and_write_nothing(case, tmp_path, capsys, monkeypatch):
    out, plot = tmp_path / "expr.csv", tmp_path / "expr.png"
    wav, mid, model = case / "tone.wav", case / "tone.mid", case / "model"
    long_midi = tmp_path / "long.mid"
    score_from_notes([(0.2, 3.0, 60, 80)]).write_midi(long_midi)
    message = bad_input(capsys, wav, "--midi", long_midi, "-o", out, "--model", model)
    assert "long.mid" in message and "aligned" in message
    message = bad_input(capsys, wav, "--midi", long_midi, "-o", out, "--model", model, "--plot", plot)
    assert "long.mid" in message and "aligned" in message
    text = tmp_path / "not_audio.wav"
    text.write_text("hello")
    message = bad_input(capsys, text, "--midi", mid, "-o", out, "--model", model)
    assert "not_audio.wav" in message
    message = bad_input(capsys, wav, "--midi", text, "-o", out, "--model", model)
    assert "not_audio.wav" in message and "MIDI" in message
    empty = tmp_path / "empty.mid"
    score_from_notes([]).write_midi(empty)
    message = bad_input(capsys, wav, "--midi", empty, "-o", out, "--model", model, "--plot", plot)
    assert "empty.mid" in message and "notes" in message
    message = bad_input(capsys, wav, "--midi", mid, "-o", out, "--model", tmp_path / "nowhere")
    assert "nowhere" in message
    message = bad_input(capsys, wav, "--midi", mid, "-o", out, "--model", model, "--plot", tmp_path / "expr.jpg")
    assert "expr.jpg" in message and ".png" in message
    monkeypatch.setattr("mididdsp.resynth.DEFAULT_MODEL", tmp_path / "no_default")
    monkeypatch.setattr("mididdsp.resynth.PRETRAINED", tmp_path / "no_pretrained")  # no synthesis coder either
    message = bad_input(capsys, wav, "--midi", mid, "-o", out)
    assert "--model" in message
    message = bad_input(capsys, wav, "--midi", mid, "-o", tmp_path / "expr.txt", "--model", model)
    assert ".csv or .json" in message
    assert set(tmp_path.iterdir()) == {long_midi, text, empty}  # no output (table or plot), no temporary file


def failing_table_save(self, path):
    Path(path).write_text("track,voice\n0,")  # half a table in the temporary file, then the disk is full
    raise OSError(28, "No space left on device")


def failing_plot(path, extraction):
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")  # half a picture, then matplotlib fails
    raise MididdspError("plot failed")


@pytest.mark.parametrize("failure", ["table", "plot"])
def test_a_failed_output_leaves_neither_table_nor_plot(case, tmp_path, capsys, monkeypatch, failure):
    out, plot = tmp_path / "expr.csv", tmp_path / "expr.png"
    args = ["extract", str(case / "tone.wav"), "--midi", str(case / "tone.mid"), "-o", str(out),
            "--controls", "analysis", "--plot", str(plot)]
    if failure == "table":
        monkeypatch.setattr(NoteExpression, "save", failing_table_save)
        with pytest.raises(OSError, match="No space"):
            main(args)
    else:
        monkeypatch.setattr("mididdsp.expression.plot.plot_expression", failing_plot)
        assert main(args) == 1
        assert capsys.readouterr().err.strip() == "error: plot failed"
    assert list(tmp_path.iterdir()) == []  # neither file, and no temporary file


def test_outputs_replace_old_ones_only_when_both_succeed(case, tmp_path, monkeypatch):
    out, plot = tmp_path / "expr.json", tmp_path / "expr.png"
    out.write_text("old table")
    plot.write_bytes(b"old plot")
    monkeypatch.setattr("mididdsp.expression.plot.plot_expression", failing_plot)
    args = ["extract", str(case / "tone.wav"), "--midi", str(case / "tone.mid"), "-o", str(out),
            "--controls", "analysis", "--plot", str(plot)]
    assert main(args) == 1
    assert out.read_text() == "old table" and plot.read_bytes() == b"old plot"
    assert set(tmp_path.iterdir()) == {out, plot}


def test_extract_defaults_to_the_synthesis_coder_then_the_autoencoder(case, tmp_path, monkeypatch):
    import shutil

    pretrained = tmp_path / "pretrained"
    shutil.copytree(case / "model", pretrained / "synthesis_coder")
    broken = tmp_path / "autoencoder"
    broken.mkdir()
    (broken / "config.yaml").write_text("model: [not, a, mapping")  # would fail if it were loaded
    monkeypatch.setattr("mididdsp.resynth.PRETRAINED", pretrained)
    monkeypatch.setattr("mididdsp.resynth.DEFAULT_MODEL", broken)
    out = tmp_path / "expr.csv"
    assert main(["extract", str(case / "tone.wav"), "--midi", str(case / "tone.mid"), "-o", str(out)]) == 0
    assert out.is_file()
    shutil.rmtree(pretrained / "synthesis_coder")  # without the coder the autoencoder is the default
    assert main(["extract", str(case / "tone.wav"), "--midi", str(case / "tone.mid"), "-o", str(out)]) == 1


def test_mixed_controls_take_the_measured_amplitude_on_the_models_scale():
    """The default extractor: amplitude shape from the audio (analysis), its level from the model (one gain per
    recording: the median ratio), everything else the model's."""
    import torch

    from mididdsp.dsp import compute_loudness
    from mididdsp.expression.extract import chunked_analysis_controls, mixed_controls, model_controls

    torch.manual_seed(0)
    model = DDSPAutoencoder({"hidden_size": 16, "reverb_seconds": 0.1}).eval()
    t = np.arange(32000) / 16000
    swell = np.interp(t, [0.0, 0.5, 1.5, 2.0], [0.05, 0.4, 0.1, 0.02])
    audio = torch.from_numpy((swell * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32))
    f0 = torch.full((501,), 330.0)
    loudness = compute_loudness(audio)
    mixed = mixed_controls(model, audio, f0, loudness)
    own = model_controls(model, audio, f0, loudness)
    measured = chunked_analysis_controls(audio, f0)["amplitude"]
    ratio = mixed["amplitude"][0] / measured[0]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)  # the measured shape, one gain
    sounding = loudness > -60.0
    assert torch.median(mixed["amplitude"][0][sounding] / own["amplitude"][0][sounding]).item() == \
        pytest.approx(1.0, abs=0.02)                                      # on the model's scale
    for key in ("f0_hz", "harmonic_distribution", "noise_magnitudes"):
        assert torch.equal(mixed[key], own[key])


def test_mixed_controls_use_the_gain_the_calibration_measured_for_the_instrument():
    import torch

    from mididdsp.dsp import compute_loudness
    from mididdsp.expression.extract import chunked_analysis_controls, mixed_controls

    torch.manual_seed(0)
    model = DDSPAutoencoder({"hidden_size": 16, "reverb_seconds": 0.1, "n_instruments": 2}).eval()
    model.metadata = {"instruments": {"flute": 0, "oboe": 1}, "measured_amplitude_gains": {"flute": 0.5, "oboe": -1.0}}
    t = np.arange(16000) / 16000
    audio = torch.from_numpy((0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32))
    f0 = torch.full((251,), 440.0)
    measured = chunked_analysis_controls(audio, f0)["amplitude"]
    mixed = mixed_controls(model, audio, f0, compute_loudness(audio), instrument=1)
    torch.testing.assert_close(mixed["amplitude"], measured * math.exp(-1.0))


# ---------------------------------------------------------------------------------------------- recording level
LEVEL_NOTES = [(0.1 + 0.45 * i, 0.5 + 0.45 * i, 60 + (2 * i) % 12, 80) for i in range(10)]
LEVEL_DB = [-12.0, -18.0, -8.0, -22.0, -15.0, -24.0, -10.0, -20.0, -14.0, -16.0]  # 16 dB of dynamics


def phrase(gain_db: float) -> np.ndarray:
    """Ten harmonic notes at LEVEL_DB (+ gain_db), 10 ms fades."""
    t = np.arange(int(4.8 * SR)) / SR
    audio = np.zeros_like(t)
    for (start, end, pitch, _), level in zip(LEVEL_NOTES, LEVEL_DB):
        inside = (t >= start) & (t < end)
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        fade = np.clip(np.minimum(t[inside] - start, end - t[inside]) / 0.01, 0, 1)
        audio[inside] = 10 ** ((level + gain_db) / 20) * fade * sum(
            np.sin(2 * np.pi * k * f0 * t[inside]) / k for k in range(1, 8))
    return audio.astype(np.float32)


@pytest.mark.slow
def test_a_quieter_copy_moves_only_the_level_offset():
    """The issue's test: a phrase and a copy 20 dB quieter, through the default extractor (the shipped coder,
    mixed): the volume columns agree (r >= 0.99, within 1 dB), no note sits at either end of the scale, and the
    20 dB go into level_offset_db."""
    from mididdsp.expression.extract import extract
    from mididdsp.models import load_model
    from mididdsp.resynth import SHIPPED_CODER

    coder = load_model(SHIPPED_CODER)
    score = score_from_notes(LEVEL_NOTES, program=73)
    loud, quiet = (extract(phrase(gain), score, coder).table for gain in (-6.0, -26.0))
    assert np.corrcoef(loud.volume, quiet.volume)[0, 1] >= 0.99
    np.testing.assert_allclose(quiet.volume_db, loud.volume_db, atol=1.0)
    # both are analysed at one level, so every control is the same, attack noise included (before, the quiet
    # copy's attack noise rose against the analysis's absolute floors)
    for name in ("volume", "volume_fluctuation", "volume_peak_position", "vibrato", "brightness", "attack_noise"):
        np.testing.assert_allclose(getattr(quiet, name), getattr(loud, name), atol=1e-3, err_msg=name)
    for table in (loud, quiet):
        assert ((table.volume > 0) & (table.volume < 1)).all(), table.volume
        assert np.ptp(table.level_offset_db) == 0  # one recording, one offset
        # the table's levels follow the phrase's dynamics (its 16 dB, as the measured amplitude reads them)
        assert np.corrcoef(table.volume_db, LEVEL_DB)[0, 1] > 0.99
    assert quiet.level_offset_db[0] - loud.level_offset_db[0] == pytest.approx(-20.0, abs=1.0)


def test_the_channel_volume_is_taken_out_of_the_level_offset_as_render_applies_it():
    """render multiplies a track by the General MIDI gain of its CC7 (default 100: -4.15 dB); extract takes it out
    of the level offset, so a table played back with the same file sounds at the recording's level. The same
    audio read against CC7 127, the default (100) and 64 gives offsets 40 log10(127 / 100) and 40 log10(100 / 64)
    dB apart and the same relative controls; with ``midi_volume=False`` the channel volume is ignored."""
    from mididdsp.expression.extract import extract
    from mididdsp.models import load_model
    from mididdsp.resynth import SHIPPED_CODER
    from mididdsp.score import Note, Score, Track

    coder = load_model(SHIPPED_CODER)
    notes = [Note(s, e, p, v) for s, e, p, v in LEVEL_NOTES]

    def table(cc7, **options):
        controls = {} if cc7 is None else {7: [(0.0, float(cc7))]}
        score = Score([Track("flute", 73, False, notes, controls=controls)], max(n.end for n in notes))
        return extract(phrase(-6.0), score, coder, **options).table

    full, default, soft = table(127), table(None), table(64)
    assert default.level_offset_db[0] - full.level_offset_db[0] == pytest.approx(40 * np.log10(127 / 100), abs=0.01)
    assert soft.level_offset_db[0] - default.level_offset_db[0] == pytest.approx(40 * np.log10(100 / 64), abs=0.01)
    for name in ("volume", "volume_fluctuation", "volume_peak_position", "attack_noise"):
        np.testing.assert_allclose(getattr(soft, name), getattr(full, name), atol=1e-3, err_msg=name)
    ignored = table(64, midi_volume=False)
    assert ignored.level_offset_db[0] - full.level_offset_db[0] == pytest.approx(0.0, abs=0.01)


def test_analysis_gain_brings_the_notes_to_the_analysis_level():
    """A sine of amplitude A has an RMS level of 20 log10(A / sqrt 2) dB inside its note: the gain is the analysis
    level minus that, whatever A; frames outside the notes (here a louder burst) do not count."""
    from mididdsp.expression.extract import ANALYSIS_LEVEL_DB, analysis_gain_db

    t = np.arange(32000) / 16000
    score = score_from_notes([(0.25, 1.25, 69, 80)], program=73)
    for amplitude in (0.5, 0.005):
        audio = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        audio[int(1.6 * 16000):] *= 100.0  # after the note
        expected = ANALYSIS_LEVEL_DB - 20 * np.log10(amplitude / np.sqrt(2))
        assert analysis_gain_db(audio, score) == pytest.approx(expected, abs=0.05)
    assert analysis_gain_db(np.zeros(32000, np.float32), score) == 0.0


def test_with_level_offset_keeps_the_absolute_levels():
    """Re-expressing a table at another offset moves volume_db / attack_noise_db by the difference; their sum with
    the offset (what a render plays) is unchanged, and the scaled twins follow."""
    table = NoteExpression({"track": [0, 0], "voice": [0, 0], "note_index": [0, 1], "start": [0.0, 1.0],
                            "end": [0.5, 1.5], "pitch": [60, 62], "velocity": [80, 80], "instrument": "violin",
                            "volume_db": [-30.0, -24.0], "volume_fluctuation": [0.2, 0.2],
                            "volume_peak_position": [0.5, 0.5], "vibrato": [0.0, 0.0], "brightness": [0.3, 0.3],
                            "attack_noise_db": [-60.0, -55.0], "level_offset_db": [-8.0, -8.0]})
    moved = table.with_level_offset(-2.0)
    np.testing.assert_allclose(moved.volume_db, [-36.0, -30.0])
    np.testing.assert_allclose(moved.volume_db + moved.level_offset_db, table.volume_db + table.level_offset_db)
    np.testing.assert_allclose(moved.attack_noise_db + moved.level_offset_db,
                               table.attack_noise_db + table.level_offset_db)
    np.testing.assert_allclose(moved.volume, (moved.volume_db + 60.0) / 60.0)  # fixed range -60 .. 0 dB
    np.testing.assert_allclose(moved.volume_fluctuation, table.volume_fluctuation)
