"""NoteExpression: reading, editing with validation, twins kept in step, lossless CSV/JSON round trips."""
import json
import warnings

import numpy as np
import pytest

from mididdsp.errors import InputFileError, MididdspError
from mididdsp.expression.table import COLUMNS, ExpressionRangeWarning, NoteExpression


def make_table(n=5):
    rng = np.random.default_rng(0)
    return NoteExpression({
        "track": [0] * n, "voice": [0] * (n - 1) + [1], "note_index": list(range(n - 1)) + [0],
        "start": [0.1 * i + 1 / 3 for i in range(n)], "end": [0.1 * i + 0.45 for i in range(n)],
        "pitch": [60 + 3 * i for i in range(n)], "velocity": [64 + i for i in range(n)], "instrument": "violin",
        "volume": rng.random(n), "volume_fluctuation": rng.random(n), "volume_peak_position": rng.random(n),
        "vibrato": rng.random(n), "brightness": rng.random(n), "attack_noise": rng.random(n),
        "vibrato_rate_hz": rng.uniform(4, 7, n)})


def test_reading_rows_columns_and_selections():
    table = make_table()
    assert len(table) == 5 and table.columns == COLUMNS
    assert table[2]["pitch"] == 66 and table[2, "pitch"] == 66 and table[-1, "voice"] == 1
    assert table["pitch"].tolist() == table.pitch.tolist() == [60, 63, 66, 69, 72]
    high = table[table.pitch > 65]
    assert isinstance(high, NoteExpression) and high.pitch.tolist() == [66, 69, 72]
    assert [row["pitch"] for row in table] == [60, 63, 66, 69, 72]
    assert table.controls_array().shape == (5, 6)
    # Physical twins were derived from the scaled values: volume 0..1 <-> -60..0 dB.
    assert np.allclose(table.volume_db, -60.0 + 60.0 * table.volume)
    with pytest.raises(KeyError):
        table["loudness"]
    with pytest.raises(IndexError):
        table[7]


def test_edits_keep_twins_in_step():
    table = make_table()
    table[3, "volume"] = 0.5
    assert table[3, "volume_db"] == pytest.approx(-30.0)
    table.set("vibrato", 0.8, where=table.pitch > 65)
    assert table.vibrato.tolist()[2:] == [0.8] * 3 and table.vibrato_extent_cents[2:] == pytest.approx([48.0] * 3)
    table["vibrato_extent_cents"] = 15.0  # physical -> scaled
    assert table.vibrato == pytest.approx([0.25] * 5)
    table[[0, 1], "brightness"] = [0.0, 1.0]
    assert table.brightness_centroid[:2].tolist() == [1.0, 8.0]
    table["volume_db"] = -90.0  # below the range: the scaled value clips, the physical keeps the exact value
    assert table.volume.tolist() == [0.0] * 5 and table.volume_db.tolist() == [-90.0] * 5
    table.set("pitch", 61, where=0)
    assert table[0, "pitch"] == 61


def test_validation_nan_errors_and_out_of_range_clips_with_warning():
    table = make_table()
    with pytest.raises(MididdspError, match="volume.*NaN.*\\[2\\]"):
        table[2, "volume"] = float("nan")
    with pytest.warns(ExpressionRangeWarning, match="clipped"):
        table[1, "attack_noise"] = 1.7
    assert table[1, "attack_noise"] == 1.0
    with pytest.raises(MididdspError, match="pitch"):
        table[0, "pitch"] = 200
    with pytest.raises(MididdspError, match="end <= start"):
        table[0, "end"] = 0.0
    with pytest.raises(MididdspError, match="missing"):
        NoteExpression({"pitch": [60]})


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_save_load_round_trip_is_lossless(tmp_path, suffix):
    table = make_table()
    table[0, "volume"] = 0.1 + 0.2  # 0.30000000000000004: needs all 17 digits
    table["instrument"] = ["violin, solo", "flute", 'say "hi"', "cello", "trumpet"]
    path = tmp_path / f"expression{suffix}"
    table.save(path)
    loaded = NoteExpression.load(path)
    assert loaded == table
    for column in COLUMNS:
        assert np.array_equal(loaded[column], table[column]), column
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    frame = loaded.to_dataframe()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 5
    assert NoteExpression.from_dataframe(frame) == table


def test_loading_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="no such"):
        NoteExpression.load(tmp_path / "missing.csv")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputFileError, match="not a note expression table"):
        NoteExpression.load(bad)
    table = make_table()
    path = tmp_path / "t.csv"
    table.save(path)
    text = path.read_text().splitlines()  # the header, then the rows: nothing else
    assert text[0].split(",") == list(COLUMNS)
    header = text[0].split(",")
    fields = text[1].split(",")
    fields[header.index("vibrato")] = "nan"
    path.write_text("\n".join([text[0], ",".join(fields)] + text[2:]) + "\n")
    with pytest.raises(MididdspError, match="t.csv.*vibrato.*NaN"):
        NoteExpression.load(path)
    fields[header.index("vibrato")] = "1.5"
    path.write_text("\n".join([text[0], ",".join(fields)] + text[2:]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert NoteExpression.load(path)[0, "vibrato"] == 1.0
    assert any(issubclass(w.category, ExpressionRangeWarning) for w in caught)
    fields[header.index("vibrato")] = "lots"
    path.write_text("\n".join([text[0], ",".join(fields)] + text[2:]) + "\n")
    with pytest.raises(InputFileError, match="t.csv.*row 0, column 'vibrato'.*'lots'"):
        NoteExpression.load(path)


def test_csv_scaled_columns_win_over_edited_physical_ones(tmp_path):
    table = make_table()
    path = tmp_path / "t.csv"
    table.save(path)
    text = path.read_text().splitlines()
    header = text[0].split(",")
    fields = text[2].split(",")
    fields[header.index("vibrato_extent_cents")] = "12.5"  # edited in a spreadsheet without its scaled twin
    path.write_text("\n".join([text[0], text[1], ",".join(fields)] + text[3:]) + "\n")
    with pytest.warns(ExpressionRangeWarning, match="row 1: vibrato_extent_cents 12.5 does not match vibrato"):
        loaded = NoteExpression.load(path)
    assert loaded[1, "vibrato"] == table[1, "vibrato"]
    assert loaded[1, "vibrato_extent_cents"] == table[1, "vibrato_extent_cents"]


def assert_rejected(table, key, value, error=MididdspError, match=None):
    """``table[key] = value`` raises ``error`` and leaves every column of the table exactly as it was."""
    before = table.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExpressionRangeWarning)  # a clip may come before the rejection
        with pytest.raises(error, match=match):
            table[key] = value
    assert table == before, f"rejected edit {key!r} = {value!r} changed the table"


NUMBER_COLUMNS = [c for c in COLUMNS if c != "instrument"]


@pytest.mark.parametrize("column", NUMBER_COLUMNS)
def test_rejected_edits_leave_the_table_unchanged(column):
    table = make_table()
    mask = table.pitch > 62  # rows 1..4
    # NaN / infinity: on one row, on a selection (valid values first, the bad one last), on the whole column.
    assert_rejected(table, (2, column), float("nan"), match="NaN")
    assert_rejected(table, (mask, column), [table[1, column], table[2, column], table[3, column], float("inf")])
    assert_rejected(table, ([0, 3], column), [table[0, column], float("nan")])
    assert_rejected(table, (slice(1, 3), column), float("nan"))
    assert_rejected(table, column, [table[0, column]] * 4 + [float("nan")])
    assert_rejected(table, (mask, column), "loud", match="expected numbers")
    assert_rejected(table, (mask, column), [0.5, 0.5])  # wrong number of values for the selection
    if column in ("track", "voice", "note_index", "pitch", "velocity"):
        assert_rejected(table, (mask, column), [1, 2, 3, 2.5], match="whole numbers")
        assert_rejected(table, (mask, column), [1, 2, 3, -1], match="out of range")
    if column in ("pitch", "velocity"):
        assert_rejected(table, (mask, column), [60, 61, 62, 128], match="out of range")
    if column in ("start", "end"):
        assert_rejected(table, (mask, column), [0.5, 0.6, 0.7, -1.0], match="negative")


def test_rejected_start_and_end_edits_leave_the_table_unchanged():
    table = make_table()  # starts 1/3 + 0.1 i, ends 0.45 + 0.1 i
    assert_rejected(table, (0, "end"), 0.1, match=r"end <= start at row 0 \(start 0.333")
    assert_rejected(table, (0, "end"), table[0, "start"], match="end <= start")  # zero length
    assert_rejected(table, (0, "start"), 0.5, match="end <= start at row 0")
    assert_rejected(table, (table.pitch > 65, "end"), [1.0, 1.0, 0.2], match="row 4")
    assert_rejected(table, ([1, 2], "start"), [0.3, 0.9], match="row 2")
    assert_rejected(table, (slice(None), "start"), 0.6, match="row 0.*row 1")
    assert_rejected(table, "end", 0.3, match="end <= start")
    table.set("end", 2.0).set("start", 1.5)  # valid edits in an order that passes through valid states only
    assert table.start.tolist() == [1.5] * 5 and table.end.tolist() == [2.0] * 5


def test_rejected_control_edits_keep_both_twins():
    table = make_table()
    before = table.copy()
    assert_rejected(table, (table.pitch > 62, "vibrato_extent_cents"), [10.0, 20.0, 30.0, float("nan")])
    assert_rejected(table, ([0, 1], "volume"), [0.2, float("nan")])
    assert table.vibrato.tolist() == before.vibrato.tolist() and table.volume_db.tolist() == before.volume_db.tolist()


def test_construction_rejects_end_not_after_start():
    columns = {column: make_table()[column] for column in COLUMNS}
    columns["end"] = columns["end"].copy()
    columns["end"][3] = columns["start"][3] - 0.05
    with pytest.raises(MididdspError, match=r"end <= start at row 3 \(start 0.633.* s, end 0.583.* s\)"):
        NoteExpression(columns)
    columns["end"][3] = columns["start"][3]
    with pytest.raises(MididdspError, match="end <= start at row 3"):
        NoteExpression(columns)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_loading_a_table_with_end_before_start_names_file_row_and_values(tmp_path, suffix):
    table = make_table()
    path = tmp_path / f"t{suffix}"
    table.save(path)
    if suffix == ".csv":
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        fields = lines[3].split(",")  # row 2
        fields[header.index("start")], fields[header.index("end")] = "0.9", "0.7"
        lines[3] = ",".join(fields)
        path.write_text("\n".join(lines) + "\n")
    else:
        document = json.loads(path.read_text())
        document["notes"][2]["start"], document["notes"][2]["end"] = 0.9, 0.7
        path.write_text(json.dumps(document))
    expected = rf"t\{suffix}: .*end <= start at row 2 \(start 0.9 s, end 0.7 s\)"
    with pytest.raises(MididdspError, match=expected) as caught:
        NoteExpression.load(path)
    assert "\n" not in str(caught.value)
