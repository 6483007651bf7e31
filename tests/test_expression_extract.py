"""`mididdsp extract` on a tiny synthetic case (a tone with vibrato + its MIDI), and its bad-input errors."""
import math

import numpy as np
import pytest

from mididdsp.audio import save_audio
from mididdsp.cli import main
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


def run_cli(capsys, *args):
    code = main(["extract", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_bad_inputs_give_one_line_and_write_nothing(case, tmp_path, capsys, monkeypatch):
    out = tmp_path / "expr.csv"
    wav, mid, model = case / "tone.wav", case / "tone.mid", case / "model"
    long_midi = tmp_path / "long.mid"
    score_from_notes([(0.2, 3.0, 60, 80)]).write_midi(long_midi)
    code, message = run_cli(capsys, wav, "--midi", long_midi, "-o", out, "--model", model)
    assert code == 1 and "long.mid" in message and "aligned" in message
    text = tmp_path / "not_audio.wav"
    text.write_text("hello")
    code, message = run_cli(capsys, text, "--midi", mid, "-o", out, "--model", model)
    assert code == 1 and "not_audio.wav" in message
    code, message = run_cli(capsys, wav, "--midi", text, "-o", out, "--model", model)
    assert code == 1 and "not_audio.wav" in message and "MIDI" in message
    empty = tmp_path / "empty.mid"
    score_from_notes([]).write_midi(empty)
    code, message = run_cli(capsys, wav, "--midi", empty, "-o", out, "--model", model)
    assert code == 1 and "empty.mid" in message and "notes" in message
    code, message = run_cli(capsys, wav, "--midi", mid, "-o", out, "--model", tmp_path / "nowhere")
    assert code == 1 and "nowhere" in message
    monkeypatch.setattr("mididdsp.resynth.DEFAULT_MODEL", tmp_path / "no_default")
    code, message = run_cli(capsys, wav, "--midi", mid, "-o", out)
    assert code == 1 and "--model" in message
    code, message = run_cli(capsys, wav, "--midi", mid, "-o", tmp_path / "expr.txt", "--model", model)
    assert code == 1 and ".csv or .json" in message
    assert "\n" not in message
    assert set(tmp_path.iterdir()) == {long_midi, text, empty}  # no output, no temporary file
