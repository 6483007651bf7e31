"""The editor's JSON API (`mididdsp edit`), over HTTP against a real server and the shipped model: the session, an
edit heard where it was made, undo/redo bit for bit, the incremental render equal to a full render, the table round
trip, resampling with fixed controls, instruments, every bad request refused with the state unchanged, and the
Host / Origin refusals."""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

import mididdsp
from mididdsp.cli import main
from mididdsp.editor.server import MAX_BODY, EditorServer
from mididdsp.editor.session import ApiError, EditorSession
from mididdsp.expression.table import NoteExpression
from mididdsp.render import PRETRAINED_MIDI
from mididdsp.score import read_midi

pytestmark = pytest.mark.skipif(not (PRETRAINED_MIDI / "generator").is_dir(),
                                reason=f"no shipped MIDI model at {PRETRAINED_MIDI} (make model-midi)")
SAMPLE_RATE = 16000


def write_duet(path) -> str:
    """A 4-second file: a violin melody (6 notes) and a cello line (3 notes), with rests between phrases."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    for program, notes in ((40, [(0.2, 0.6, 67), (0.7, 1.1, 69), (1.2, 1.6, 71), (2.4, 2.8, 72), (2.9, 3.3, 71),
                                 (3.4, 3.9, 69)]),
                           (42, [(0.2, 1.1, 48), (1.2, 1.9, 43), (2.6, 3.6, 45)])):
        instrument = pretty_midi.Instrument(program=program, name=f"program {program}")
        instrument.notes += [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for s, e, p in notes]
        midi.instruments.append(instrument)
    midi.write(str(path))
    return str(path)


@pytest.fixture(scope="module")
def model():
    return mididdsp.load_model()


@pytest.fixture(scope="module")
def midi_path(tmp_path_factory):
    return write_duet(tmp_path_factory.mktemp("editor") / "duet.mid")


@pytest.fixture(scope="module")
def server(model, midi_path):
    session = EditorSession(model, read_midi(midi_path), seed=0, name="duet.mid")
    running = EditorServer(session, "127.0.0.1", 0).start()
    yield running
    running.stop()


class Client:
    """HTTP requests to the editor with full control of the headers (Host, Origin, Content-Type)."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body=None, headers: dict | None = None, raw: bool = False):
        headers = dict(headers or {})
        if body is not None and not raw:
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body=None, **kwargs):
        status, headers, data = self.request(method, path, body, **kwargs)
        return status, json.loads(data)

    def audio(self, span: dict | None = None) -> np.ndarray:
        status, headers, data = self.request("POST", "/api/render", span)
        assert status == 200 and headers["Content-Type"] == "audio/wav", data[:200]
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == SAMPLE_RATE
        return audio

    def csv(self) -> bytes:
        status, _, data = self.request("GET", "/api/expression.csv")
        assert status == 200
        return data


@pytest.fixture
def client(server):
    """A client of the shared server; the session's table is restored after each test."""
    client = Client(server.port)
    before = client.csv()
    yield client
    if client.csv() != before:
        assert client.request("PUT", "/api/expression.csv", before, raw=True)[0] == 200


def span_db(audio: np.ndarray, start: float, end: float) -> float:
    """RMS level in dB of audio between two times (seconds)."""
    piece = audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)].astype(np.float64)
    return 10 * np.log10(np.mean(piece ** 2) + 1e-20)


def note(session_state: dict, note_id: str) -> dict:
    return next(n for n in session_state["notes"] if n["id"] == note_id)


# ------------------------------------------------------------------------------------------------ reading
def test_session_lists_tracks_and_notes_with_scaled_and_physical_controls(client):
    status, state = client.json("GET", "/api/session")
    assert status == 200
    assert [(t["index"], t["program"], t["instrument"]) for t in state["tracks"]] == [(0, 40, "violin"),
                                                                                       (1, 42, "cello")]
    assert len(state["notes"]) == 9 and len({n["id"] for n in state["notes"]}) == 9
    ranges = {c["name"]: (c["low"], c["high"], c["physical"]) for c in state["controls"]}
    assert len(ranges) == 6
    for n in state["notes"]:
        assert n["end"] > n["start"] and n["track"] in (0, 1) and 0 <= n["velocity"] <= 127
        for name, value in n["controls"].items():
            low, high, physical = ranges[name]
            assert 0 <= value <= 1 and n["physical"][physical] == pytest.approx(low + value * (high - low))
    first = note(state, "0.0.0")
    assert (first["pitch"], first["start"]) == (67, pytest.approx(0.2))


def test_page_and_static_files_are_served_and_nothing_else(client):
    status, headers, page = client.request("GET", "/")
    assert status == 200 and b"editor.js" in page and "script-src 'self'" in headers["Content-Security-Policy"]
    assert client.request("GET", "/static/editor.js")[0] == 200
    for path in ("/static/..%2Fserver.py", "/static/../session.py", "/static/%2e%2e%2fcommand.py", "/etc/passwd",
                 "/static/nothing.js"):
        assert client.request("GET", path)[0] == 404


# ------------------------------------------------------------------------------------------------ editing and audio
def test_a_louder_note_is_louder_where_it_plays_and_undo_restores_the_audio_bit_for_bit(client, model, midi_path):
    state = client.json("GET", "/api/session")[1]
    target = note(state, "0.0.3")  # violin 2.4-2.8 s; the cello plays from 2.6 s
    before_wav = client.request("POST", "/api/render")[2]
    before = client.audio()
    status, changed = client.json("PATCH", "/api/notes", {"edits": [{"id": "0.0.3", "volume": 1.0}]})
    assert status == 200 and [n["id"] for n in changed["notes"]] == ["0.0.3"]
    low, high = model.ranges["volume"]
    assert changed["notes"][0]["physical"]["volume_db"] == pytest.approx(high)
    after = client.audio()
    gain = high - (low + target["controls"]["volume"] * (high - low))
    assert gain > 3
    louder = span_db(after, target["start"] + 0.05, target["end"]) - span_db(before, target["start"] + 0.05,
                                                                               target["end"])
    assert louder > 0.5 * gain, (louder, gain)
    # far from the note (before it, beyond the generator's context) the audio is the same, to the FFT reverb's
    # float rounding (the whole bus is convolved again)
    early = slice(0, int(1.5 * SAMPLE_RATE))
    assert np.abs(after[early] - before[early]).max() < 1e-6
    # the incremental render equals a full render of the same state
    table = NoteExpression.load(_write(client.csv()), ranges=model.ranges)
    full = model.render(read_midi(midi_path), table, seed=0, stems=False)
    assert np.array_equal(full.audio, after)
    assert client.json("POST", "/api/undo")[1]["can_redo"] is True
    assert client.request("POST", "/api/render")[2] == before_wav
    assert client.json("POST", "/api/redo")[0] == 200
    assert np.array_equal(client.audio(), after)
    assert client.json("POST", "/api/undo")[0] == 200


def test_undo_and_redo_with_no_history_are_refused(model, midi_path):
    session = EditorSession(model, read_midi(midi_path))
    for action in (session.undo, session.redo):
        with pytest.raises(ApiError) as refused:
            action()
        assert refused.value.status == 409 and "nothing to" in refused.value.message


def _write(data: bytes):
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "table.csv")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def test_render_span_is_the_slice_of_the_whole(client):
    whole = client.audio()
    part = client.audio({"start": 1.0, "end": 2.0})
    assert np.array_equal(part, whole[SAMPLE_RATE:2 * SAMPLE_RATE])


def test_table_round_trip_and_render_expression_in_plays_the_edited_table(client, model, midi_path, tmp_path):
    assert client.json("PATCH", "/api/notes", {"edits": [{"id": "1.0.1", "vibrato": 0.9, "brightness": 0.2}]})[0] == 200
    table = client.csv()
    assert client.request("PUT", "/api/expression.csv", table, raw=True)[0] == 200
    assert client.csv() == table
    loaded = NoteExpression.load(_write(table), ranges=model.ranges)
    row = [i for i in range(len(loaded)) if (loaded[i, "track"], loaded[i, "voice"], loaded[i, "note_index"]) == (1, 0, 1)]
    assert loaded[row[0], "vibrato"] == 0.9 and loaded[row[0], "brightness"] == 0.2
    # `mididdsp render --expression-in` of the saved table plays what the editor plays (16-bit file: to 1 LSB)
    out = tmp_path / "out.wav"
    assert main(["render", midi_path, "-o", str(out), "--expression-in", _write(table), "--quiet"]) == 0
    rendered, _ = sf.read(out, dtype="float32")
    assert np.abs(rendered - client.audio()).max() <= 1.0 / 32768 + 1e-6


def test_resample_keeps_fixed_controls_and_leaves_other_notes_alone(client):
    state = client.json("GET", "/api/session")[1]
    chosen = ["0.0.1", "0.0.2"]
    status, result = client.json("POST", "/api/resample", {"ids": chosen, "seed": 7, "temperature": 1.0,
                                                            "fixed_columns": ["volume", "vibrato"]})
    assert status == 200 and sorted(n["id"] for n in result["notes"]) == chosen
    after = client.json("GET", "/api/session")[1]
    for n in after["notes"]:
        old = note(state, n["id"])
        if n["id"] in chosen:
            assert n["controls"]["volume"] == old["controls"]["volume"]
            assert n["controls"]["vibrato"] == old["controls"]["vibrato"]
            assert n["controls"]["brightness"] != old["controls"]["brightness"]
        else:
            assert n["controls"] == old["controls"]
    assert client.json("POST", "/api/undo")[0] == 200
    assert client.json("GET", "/api/session")[1]["notes"] == state["notes"]


def test_changing_a_tracks_instrument_rerenders_it(client, model):
    before = client.audio()
    old_state = client.json("GET", "/api/session")[1]
    status, result = client.json("PATCH", "/api/tracks", {"edits": [{"index": 1, "instrument": "bassoon"}]})
    assert status == 200 and {"index": 1, "instrument": "bassoon"} in result["tracks"]
    state = client.json("GET", "/api/session")[1]
    assert state["tracks"][1]["instrument"] == "bassoon" and note(state, "1.0.0")["instrument"] == "bassoon"
    # the track moves to the level bassoons have at its velocities (the prior's velocity fit); the others stay
    old_name = old_state["tracks"][1]["instrument"]
    shift = model.velocity_levels.instrument_change_db(old_name, "bassoon")
    levels = model.velocity_levels
    assert old_name != "bassoon" and shift == pytest.approx(
        levels.intercepts_db["bassoon"] + levels.references_db["bassoon"]
        - levels.intercepts_db[old_name] - levels.references_db[old_name]) and abs(shift) > 0.1
    for old, new in zip(old_state["notes"], state["notes"]):
        expected = old["level_offset_db"] + (shift if old["track"] == 1 else 0.0)
        assert new["level_offset_db"] == pytest.approx(expected, abs=1e-4)
        assert new["controls"] == old["controls"]
    assert not np.array_equal(client.audio(), before)
    assert client.json("POST", "/api/undo")[0] == 200
    assert np.array_equal(client.audio(), before)


def test_curves_of_a_note(client):
    status, curves = client.json("GET", "/api/notes/0.0.2/curves")
    assert status == 200 and curves["frame_rate"] == 250
    levels, f0 = np.array(curves["amplitude_db"]), curves["f0_hz"]
    inside = slice(int((curves["note_start"] - curves["start"]) * 250) + 10,
                   int((curves["note_end"] - curves["start"]) * 250) - 10)
    assert (levels[inside] > -70).all()
    pitch_hz = 440 * 2 ** ((71 - 69) / 12)
    assert all(abs(1200 * np.log2(hz / pitch_hz)) < 100 for hz in f0[inside])
    assert client.json("GET", "/api/notes/9.9.9/curves")[0] == 404


# ------------------------------------------------------------------------------------------------ refusals
BAD_REQUESTS = [
    ("unknown note id", "PATCH", "/api/notes", {"edits": [{"id": "7.0.0", "volume": 0.5}]}, 404, "7.0.0"),
    ("value above 1", "PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "volume": 1.5}]}, 400, "outside [0, 1]"),
    ("value below 0", "PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "vibrato": -0.1}]}, 400, "outside [0, 1]"),
    ("text value", "PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "volume": "loud"}]}, 400, "not a number"),
    ("boolean value", "PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "volume": True}]}, 400, "not a number"),
    ("null value", "PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "volume": None}]}, 400, "not a number"),
    ("unknown control", "PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "loudness": 0.5}]}, 400, "loudness"),
    ("edits not a list", "PATCH", "/api/notes", {"edits": {"id": "0.0.0"}}, 400, "list"),
    ("edit not an object", "PATCH", "/api/notes", {"edits": ["0.0.0"]}, 400, "object"),
    ("id not a string", "PATCH", "/api/notes", {"edits": [{"id": 3, "volume": 0.5}]}, 400, "note id"),
    ("no edits", "PATCH", "/api/notes", {"changes": []}, 400, "edits"),
    ("one bad edit of two", "PATCH", "/api/notes",
     {"edits": [{"id": "0.0.0", "volume": 0.1}, {"id": "0.0.1", "volume": 9}]}, 400, "edits[1].volume"),
    ("resample unknown id", "POST", "/api/resample", {"ids": ["0.0.0", "x"], "seed": 1}, 404, "'x'"),
    ("resample bad temperature", "POST", "/api/resample", {"ids": ["0.0.0"], "temperature": "hot"}, 400,
     "temperature"),
    ("resample bad column", "POST", "/api/resample", {"ids": ["0.0.0"], "fixed_columns": ["pitch"]}, 400,
     "fixed_columns"),
    ("unknown instrument", "PATCH", "/api/tracks", {"edits": [{"index": 0, "instrument": "kazoo"}]}, 400, "kazoo"),
    ("not a melodic track", "PATCH", "/api/tracks", {"edits": [{"index": 5, "instrument": "flute"}]}, 404, "5"),
    ("render end before start", "POST", "/api/render", {"start": 2.0, "end": 1.0}, 400, "end"),
    ("render bad start", "POST", "/api/render", {"start": "soon"}, 400, "start"),
]


@pytest.mark.parametrize("what, method, path, body, status, words", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_requests_are_refused_with_a_json_error_and_change_nothing(client, what, method, path, body, status, words):
    before = client.json("GET", "/api/session")[1]
    got, answer = client.json(method, path, body)
    assert got == status and words in answer["error"], answer
    assert client.json("GET", "/api/session")[1] == before


@pytest.mark.parametrize("what, method, path, body, headers, status, words", [
    ("malformed JSON", "PATCH", "/api/notes", b'{"edits": [', {"Content-Type": "application/json"}, 400,
     "malformed JSON"),
    ("not JSON", "PATCH", "/api/notes", b'edits=1', {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "application/json"),
    ("body over 1 MB", "PATCH", "/api/notes", b"[" + b" " * MAX_BODY + b"]", {"Content-Type": "application/json"},
     413, "at most"),
    ("table over 1 MB", "PUT", "/api/expression.csv", b"a" * (MAX_BODY + 1), {}, 413, "at most"),
    ("CSV with unknown columns", "PUT", "/api/expression.csv", b"a,b\n1,2\n", {}, 400, "unknown column"),
    ("CSV with text for a number", "PUT", "/api/expression.csv", None, {}, 400, "not a number"),
    ("CSV of other notes", "PUT", "/api/expression.csv", None, {}, 400, "no such note"),
    ("CSV not UTF-8", "PUT", "/api/expression.csv", b"\xff\xfe\x00bad", {}, 400, "UTF-8"),
])
def test_bad_bodies_are_refused(client, what, method, path, body, headers, status, words):
    before = client.csv()
    if body is None:  # a real table, broken in one place
        lines = before.decode().splitlines()
        header = lines[0].split(",")
        cells = lines[1].split(",")
        if what == "CSV with text for a number":
            cells[header.index("volume")] = "loud"
        else:
            cells[header.index("note_index")] = "40"
        body = "\n".join([lines[0], ",".join(cells), *lines[2:]]).encode()
    got, _, data = client.request(method, path, body, headers=headers, raw=True)
    assert got == status and words in json.loads(data)["error"], data[:300]
    assert client.csv() == before
    assert client.request("GET", "/api/session")[0] == 200  # still serving


def test_foreign_host_and_origin_are_refused(client, server):
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "", f"localhost.evil:{port}"):
        status, answer = client.json("GET", "/api/session", headers={"Host": host})
        assert status == 403 and "Host" in answer["error"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert client.request("GET", "/api/session", headers={"Host": host})[0] == 200
    before = client.csv()
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://127.0.0.1:{port + 1}"):
        status, answer = client.json("PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "volume": 0.9}]},
                                     headers={"Origin": origin})
        assert status == 403 and "Origin" in answer["error"]
        assert client.json("POST", "/api/undo", headers={"Origin": origin})[0] == 403
    assert client.csv() == before
    status, _ = client.json("PATCH", "/api/notes", {"edits": [{"id": "0.0.0", "volume": 0.9}]},
                            headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200


# ------------------------------------------------------------------------------------------------ the command
def test_edit_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["edit", str(tmp_path / "missing.mid"), "--no-browser"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "missing.mid" in err
    assert main(["edit", str(tmp_path / "missing.mid"), "--port", "70000"]) == 1


def test_edit_command_serves_prints_its_address_and_stops_on_ctrl_c(midi_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    # Ctrl-C as a terminal delivers it: a test run started in the background (`make test &`, nohup) passes its
    # children SIGINT ignored, and Python then leaves it ignored
    process = subprocess.Popen([sys.executable, "-m", "mididdsp", "edit", midi_path, "--port", "0", "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), process.stderr.read()
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert Client(port).json("GET", "/api/session")[1]["file"] == "duet.mid"
        process.send_signal(signal.SIGINT)
        try:  # both pipes drained while it stops: a full pipe cannot block its last writes
            _, err = process.communicate(timeout=90)  # (seconds here; generous for a loaded CI machine)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"still running 90 s after Ctrl-C; its stderr: {err[-3000:]}") from None
        assert process.returncode == 0, err
        assert "stopped" in err and "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()


def test_render_is_the_mix_of_its_voices_and_a_cached_bus_is_reused(model, midi_path):
    """The public hook the editor relies on: mix_voices(render_voices(...)) is render(), bit for bit, with stems or
    without, with reverb or without; after one voice changes, only its bus is reverberated again."""
    score = read_midi(midi_path)
    expression = model.expression(score, seed=2)
    for reverb, stems in ((True, True), (False, False)):
        full = model.render(score, expression, seed=2, reverb=reverb, stems=stems)
        mixed = model.mix_voices(score, model.render_voices(score, expression, seed=2, reverb=reverb), reverb=reverb,
                                 stems=stems)
        assert np.array_equal(full.audio, mixed.audio)
        assert full.stems.keys() == mixed.stems.keys()
        assert all(np.array_equal(full.stems[k], mixed.stems[k]) for k in full.stems)
    voices = model.render_voices(score, expression, seed=2)
    cache: dict = {}
    model.mix_voices(score, voices, stems=False, wet_cache=cache)
    expression.set("volume", 0.9, where=(expression.track == 1) & (expression.note_index == 0))
    changed = model.render_voices(score, expression, seed=2, only={(1, 0)})
    assert list(changed) == [(1, 0)]
    work: dict = {}
    remixed = model.mix_voices(score, {**voices, **changed}, stems=False, wet_cache=cache, work=work)
    reference = model.render(score, expression, seed=2, stems=False)
    assert np.array_equal(remixed.audio, reference.audio)
    assert 0 < work["reverb_blocks"] < reference.work["reverb_blocks"]  # the violin's bus came from the cache
