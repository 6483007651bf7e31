"""The editor's edit-to-audio time (issue 23): at most 1 s from an edit to playable audio for a 30 s, 4-voice file.

A 30-second file of four tracks (violin, flute, clarinet, cello), one voice each, notes of 0.2-0.6 s with short
rests (about 300 notes), served by the editor in this process (the warm session the ``edit`` command runs). Each
repeat is what the page does after a slider moves: ``PATCH /api/notes`` (one note's volume) then ``POST
/api/render`` (the whole piece as WAV), timed over HTTP from the PATCH's send to the WAV's last byte. The note
changes every repeat, cycling through the voices, and every value is new (no memo hit). For reference, in the same
run: a full ``model.render`` of the same state (what an editor without the per-voice cache would do) and the undo
(an earlier state, from the memo).

Run: ``python benchmarks/bench_editor.py [--repeats 12] [--seconds 30]``. Prints a markdown table; the 1 s target is
the edit-to-audio median (and the worst case is printed beside it).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import pretty_midi

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import table  # noqa: E402

TRACKS = ((40, 67), (73, 74), (71, 62), (42, 50))  # (GM program, centre pitch): violin, flute, clarinet, cello


def four_voice_midi(path: str, seconds: float, seed: int = 0) -> None:
    """Four single-voice tracks of random-walk melodies lasting ``seconds``."""
    rng = np.random.default_rng(seed)
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    for program, centre in TRACKS:
        instrument = pretty_midi.Instrument(program=program, name=pretty_midi.program_to_instrument_name(program))
        time_s, pitch = 0.1, centre
        while time_s < seconds - 0.7:
            length = float(rng.choice([0.2, 0.3, 0.4, 0.6]))
            pitch = int(np.clip(pitch + rng.integers(-3, 4), centre - 7, centre + 7))
            instrument.notes.append(pretty_midi.Note(velocity=int(rng.integers(60, 100)), pitch=pitch, start=time_s,
                                                     end=time_s + length))
            time_s += length + float(rng.choice([0.0, 0.02, 0.1, 0.3]))
        midi.instruments.append(instrument)
    midi.write(path)


def request(port: int, method: str, path: str, body=None) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    import torch

    import mididdsp
    from mididdsp.editor.server import EditorServer
    from mididdsp.editor.session import EditorSession
    from mididdsp.score import read_midi

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "four_voices.mid")
    four_voice_midi(path, args.seconds)
    model = mididdsp.load_model()
    score = read_midi(path)
    started = time.perf_counter()
    session = EditorSession(model, score, seed=0, name="four_voices.mid")
    session.update_audio()
    warm_s = time.perf_counter() - started
    server = EditorServer(session, "127.0.0.1", 0).start()
    try:
        request(server.port, "POST", "/api/render")  # first mix (reverb of every bus), as the page does on load
        notes = json.loads(request(server.port, "GET", "/api/session"))["notes"]
        by_track = [[n for n in notes if n["track"] == t] for t in range(len(TRACKS))]
        rng = np.random.default_rng(1)
        edit_s, undo_s = [], []
        for repeat in range(args.repeats):
            track_notes = by_track[repeat % len(by_track)]
            note = track_notes[int(rng.integers(len(track_notes)))]
            value = float(rng.uniform(0.05, 0.95))
            begin = time.perf_counter()
            request(server.port, "PATCH", "/api/notes", {"edits": [{"id": note["id"], "volume": round(value, 6)}]})
            wav = request(server.port, "POST", "/api/render")
            edit_s.append(time.perf_counter() - begin)
            assert session.last_render["voices_rendered"] == 1 and len(wav) > args.seconds * 16000 * 4
            begin = time.perf_counter()
            request(server.port, "POST", "/api/undo")
            request(server.port, "POST", "/api/render")
            undo_s.append(time.perf_counter() - begin)
        full_s = []
        for _ in range(3):
            begin = time.perf_counter()
            model.render(score, session.expression, seed=0, track_instruments=session.instruments, stems=False)
            full_s.append(time.perf_counter() - begin)
    finally:
        server.stop()
    median = statistics.median(edit_s)
    rows = [
        {"measure": "edit -> audio (PATCH one note's volume + POST /api/render, over HTTP)",
         "median s": f"{median:.3f}", "worst s": f"{max(edit_s):.3f}", "n": len(edit_s)},
        {"measure": "undo -> audio (from the memo)", "median s": f"{statistics.median(undo_s):.3f}",
         "worst s": f"{max(undo_s):.3f}", "n": len(undo_s)},
        {"measure": "full model.render of the same state (reference)", "median s": f"{statistics.median(full_s):.3f}",
         "worst s": f"{max(full_s):.3f}", "n": len(full_s)},
        {"measure": "session start (every voice rendered once)", "median s": f"{warm_s:.3f}", "worst s": "",
         "n": 1},
    ]
    print(f"{len(notes)} notes, {len(TRACKS)} voices, {args.seconds:.0f} s; {platform.node()}, "
          f"{os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()}")
    print(table(rows, ["measure", "median s", "worst s", "n"]))
    print(f"edit-to-audio target 1 s: {'met' if median <= 1.0 else 'MISSED'} (median {median:.3f} s, "
          f"{statistics.median(full_s) / median:.1f}x faster than a full render)")


if __name__ == "__main__":
    main()
