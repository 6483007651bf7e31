"""Per-model expression ranges: the percentile rule on known values, and `mididdsp calibrate` -> config -> extract."""
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from mididdsp.cli import main
from mididdsp.errors import MididdspError
from mididdsp.expression.calibrate import MARGINS, MIN_SPANS, ranges_from_values
from mididdsp.expression.controls import CONTROL_NAMES, PHYSICAL_NAMES, PHYSICAL_OF, control_ranges
from mididdsp.expression.table import NoteExpression
from mididdsp.models import load_model, read_model_config, save_model
from mididdsp.resynth import PRETRAINED
from mididdsp.synthesis.autoencoder import DDSPAutoencoder

SR = 16000


def test_ranges_are_the_1st_and_99th_percentiles_with_fixed_and_minimum_spans_and_the_volume_margin():
    n = 1001
    values = {name: np.zeros(n) for name in PHYSICAL_NAMES}
    values["volume_db"] = np.linspace(-40.0, -10.0, n)          # percentiles -39.7 and -10.3
    values["volume_fluctuation_db"] = np.full(n, 2.0)           # no spread: widened to MIN_SPANS around 2
    values["vibrato_extent_cents"] = np.r_[np.zeros(700), np.linspace(5.0, 50.0, 301)]
    values["brightness_centroid"] = np.linspace(1.0, 6.0, n)
    values["attack_noise_db"] = np.linspace(-70.0, -20.0, n)
    values["peak_position"] = np.linspace(0.2, 0.4, n)          # ignored: always 0..1
    ranges = ranges_from_values(values)
    assert list(ranges) == list(CONTROL_NAMES)
    margin = MARGINS["volume"] * (-10.3 - -39.7)  # volume: the 1..99 % band widened on each side
    assert ranges["volume"] == (pytest.approx(-39.7 - margin, abs=0.011), pytest.approx(-10.3 + margin, abs=0.011))
    span = MIN_SPANS["volume_fluctuation"]
    assert ranges["volume_fluctuation"] == (pytest.approx(2.0 - span / 2), pytest.approx(2.0 + span / 2))
    values["volume_fluctuation_db"] = np.full(n, 0.5)  # widened, then moved up so a std's range starts at 0
    assert ranges_from_values(values)["volume_fluctuation"] == (0.0, pytest.approx(span))
    assert ranges["vibrato"][0] == 0.0
    assert ranges["vibrato"][1] == pytest.approx(np.percentile(values["vibrato_extent_cents"], 99), abs=0.011)
    assert ranges["volume_peak_position"] == (0.0, 1.0)
    # Rounded outwards: every value inside the 1..99 % band maps into [0, 1].
    low, high = ranges["attack_noise"]
    assert low <= np.percentile(values["attack_noise_db"], 1) and high >= np.percentile(values["attack_noise_db"], 99)
    with pytest.raises(MididdspError, match="only 5 notes"):
        ranges_from_values({name: v[:5] for name, v in values.items()})


def test_ranges_are_validated():
    assert control_ranges({"volume": [-50, -5]})["volume"] == (-50.0, -5.0)
    for bad, match in [({"volume": [0, -5]}, "low < high"), ({"loudness": [0, 1]}, "unknown control"),
                       ({"vibrato": [0, float("nan")]}, "finite"), ({"vibrato": "wide"}, r"\[low, high\]")]:
        with pytest.raises(MididdspError, match=match):
            control_ranges(bad)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_table_keeps_its_ranges_through_edits_and_files(tmp_path, suffix):
    ranges = {"volume": (-45.0, -5.0), "vibrato": (0.0, 40.0)}
    table = NoteExpression({"track": [0, 0], "voice": [0, 0], "note_index": [0, 1], "start": [0.0, 1.0],
                            "end": [1.0, 2.0], "pitch": [60, 62], "velocity": [80, 90], "instrument": "violin",
                            "volume_db": [-25.0, -5.0], "volume_fluctuation": 0.2, "volume_peak_position": 0.5,
                            "vibrato_extent_cents": [10.0, 0.0], "brightness": 0.5, "attack_noise": 0.5}, ranges)
    assert table.volume.tolist() == [0.5, 1.0] and table.vibrato.tolist() == [0.25, 0.0]
    table[1, "vibrato"] = 0.5
    assert table[1, "vibrato_extent_cents"] == 20.0  # the middle of the table's 0..40 cents, not of 0..60
    assert table[table.pitch > 61].ranges == table.ranges and table.copy() == table
    path = tmp_path / f"t{suffix}"
    table.save(path)
    # a JSON carries its ranges; a CSV is plain (header + rows) and takes them from the reader (e.g. the model)
    loaded = NoteExpression.load(path, ranges=ranges if suffix == ".csv" else None)
    assert loaded == table and loaded.ranges["volume"] == (-45.0, -5.0)
    assert NoteExpression.from_dataframe(loaded.to_dataframe(), ranges) == table
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)  # no options: nothing but the header and the rows
        assert frame["vibrato"].tolist() == [0.25, 0.5] and len(frame) == 2


def test_a_version_1_json_table_loads_with_the_fixed_ranges(tmp_path):
    import json

    table = NoteExpression({"track": [0], "voice": [0], "note_index": [0], "start": [0.0], "end": [1.0],
                            "pitch": [60], "velocity": [80], "instrument": "violin", "volume": 0.5,
                            "volume_fluctuation": 0.2, "volume_peak_position": 0.5, "vibrato": 0.1,
                            "brightness": 0.5, "attack_noise": 0.5})
    path = tmp_path / "old.json"
    table.save(path)
    document = json.loads(path.read_text())
    document["format"] = "mididdsp-note-expression/1"
    del document["ranges"]
    path.write_text(json.dumps(document))
    assert NoteExpression.load(path) == table


NOTES = [(0.1 + 0.4 * i, 0.4 + 0.4 * i, 69, 80) for i in range(24)]
LEVELS = np.geomspace(0.01, 0.5, len(NOTES))  # 34 dB of spread between the quietest and the loudest note


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A prepared pair (24 notes of a 440 Hz harmonic tone at known levels + MIDI) and a calibrated model."""
    from mididdsp.datasets import prepare as prep
    from mididdsp.dsp.core import n_frames
    from mididdsp.score import score_from_notes

    root = tmp_path_factory.mktemp("calibrate")
    t = np.arange(int(SR * 10.0)) / SR
    audio = np.zeros_like(t)
    for (start, end, _, _), level in zip(NOTES, LEVELS):
        inside = (t >= start) & (t < end)
        audio[inside] = level * sum(np.sin(2 * np.pi * k * 440.0 * t[inside]) / k for k in range(1, 6))
    (root / "pairs").mkdir()
    sf.write(root / "pairs" / "take.wav", audio.astype(np.float32), SR)
    score_from_notes(NOTES).write_midi(root / "pairs" / "take.mid")
    with pytest.MonkeyPatch.context() as patch:  # the tone is exactly 440 Hz: no CREPE needed
        patch.setattr("mididdsp.pitch.compute_f0",
                      lambda audio, **kw: (torch.full((n_frames(len(audio)),), 440.0), torch.ones(n_frames(len(audio)))))
        prep.prepare([f"pairs:{root / 'pairs'}:violin"], root / "prepared", valid=0.0, test=0.0, workers=1,
                     progress=False)
    # The shipped synthesis coder (a copy: calibrate rewrites its config): a trained model's amplitude follows
    # the input level, so the notes' 34 dB spread shows in its controls.
    shutil.copytree(PRETRAINED / "synthesis_coder", root / "model")
    assert main(["calibrate", str(root / "model"), "--data", str(root / "prepared")]) == 0
    return root


def test_calibrate_stores_the_ranges_of_the_models_own_notes(calibrated):
    from mididdsp.expression.calibrate import measure_notes

    config = read_model_config(calibrated / "model")
    assert config["expression_calibration"]["notes"] == len(NOTES)
    model = load_model(calibrated / "model")
    physical, recordings = measure_notes(model, calibrated / "prepared", progress=False)
    assert recordings == 1 and len(physical["volume_db"]) == len(NOTES)
    stored = {name: tuple(pair) for name, pair in config["expression_ranges"].items()}
    assert stored == ranges_from_values(physical)
    # The notes span more than the minimum span, so the scale's 1..99 % band runs from the quietest to the loudest
    # note (1st / 99th percentile of 24 notes), and the volume margin lies beyond it on either side.
    low, high = stored["volume"]
    band = (high - low) / (1 + 2 * MARGINS["volume"])
    assert band > MIN_SPANS["volume"]
    assert low + MARGINS["volume"] * band == pytest.approx(physical["volume_db"].min(), abs=0.15 * band)
    assert high - MARGINS["volume"] * band == pytest.approx(physical["volume_db"].max(), abs=0.15 * band)


def test_extract_uses_the_models_ranges(calibrated, tmp_path):
    out = tmp_path / "expression.csv"
    assert main(["extract", str(calibrated / "pairs" / "take.wav"), "--midi", str(calibrated / "pairs" / "take.mid"),
                 "-o", str(out), "--model", str(calibrated / "model")]) == 0
    ranges = read_model_config(calibrated / "model")["expression_ranges"]
    table = NoteExpression.load(out, ranges=ranges)  # a CSV carries no ranges: the model's are given
    assert table.ranges == {name: tuple(pair) for name, pair in ranges.items()}
    for name in CONTROL_NAMES:
        low, high = ranges[name]
        expected = np.clip((table[PHYSICAL_OF[name]] - low) / (high - low), 0.0, 1.0)
        np.testing.assert_allclose(table[name], expected, atol=1e-6, err_msg=name)
    volume = table.volume  # the notes use the scale but its margins (kept for more dynamic recordings)
    edge = MARGINS["volume"] / (1 + 2 * MARGINS["volume"])
    assert volume.min() < edge + 0.05 and volume.max() > 1 - edge - 0.05
    assert volume.min() > 0.0 and volume.max() < 1.0


def test_calibrate_without_notes_is_one_clear_error(calibrated, tmp_path, capsys):
    save_model(DDSPAutoencoder({"hidden_size": 16, "reverb": None, "n_instruments": 1}), tmp_path / "m",
               {"instruments": {"flute": 0}})
    assert main(["calibrate", str(tmp_path / "m"), "--data", str(calibrated / "prepared")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no train recordings with notes" in err[0] and "flute" in err[0]
    assert "expression_ranges" not in read_model_config(tmp_path / "m")
