"""The editor page in a real headless browser (Debian's Chromium driven by Playwright), used as a person uses it:
the page loads a MIDI file, a note is clicked, its volume slider moved, the audio the page renders is louder where
the note plays, undo brings back the audio bit for bit, the table saved from the page is the API's table, and a bad
table shows an error in the page. One page session (the browser start is the cost).

The browser is the system's (``/usr/bin/chromium``, ``apt-get install chromium``; .ci/run installs it); nothing is
downloaded. Without it the test skips, unless ``MIDIDDSP_REQUIRE_BROWSER=1`` (CI) makes that a failure."""
from __future__ import annotations

import base64
import io
import os
import shutil
import urllib.request

import numpy as np
import pytest
import soundfile as sf

import mididdsp
from mididdsp.editor.server import EditorServer
from mididdsp.editor.session import EditorSession
from mididdsp.render import PRETRAINED_MIDI
from mididdsp.score import read_midi
from test_editor import SAMPLE_RATE, span_db, write_duet

CHROMIUM = os.environ.get("MIDIDDSP_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("MIDIDDSP_REQUIRE_BROWSER") == "1"


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install '.[test]')"
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


MISSING = browser_missing()
if MISSING and REQUIRED:
    raise RuntimeError(f"MIDIDDSP_REQUIRE_BROWSER=1 but {MISSING}")
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
              pytest.mark.skipif(not (PRETRAINED_MIDI / "generator").is_dir(), reason="no shipped MIDI model"),
              pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    midi = write_duet(tmp_path_factory.mktemp("browser") / "duet.mid")
    session = EditorSession(mididdsp.load_model(), read_midi(midi), seed=0, name="duet.mid")
    running = EditorServer(session, "127.0.0.1", 0).start()
    yield running
    running.stop()


def page_audio(page) -> np.ndarray:
    """The WAV the page last rendered (its player's source), decoded."""
    encoded = page.evaluate("""async () => {
        const bytes = new Uint8Array(await (await fetch(window.editor.audioUrl)).arrayBuffer());
        let text = "";
        for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        return btoa(text);
    }""")
    audio, rate = sf.read(io.BytesIO(base64.b64decode(encoded)), dtype="float32")
    assert rate == SAMPLE_RATE
    return audio


def wait_for_render(page, version: int) -> None:
    """Until the page has rendered after ``version`` and no request is in flight."""
    page.wait_for_function("(version) => window.editor.audioVersion > version && window.editor.busy === 0",
                           arg=version, timeout=60000)


def test_edit_listen_undo_save_and_a_bad_table_in_the_page(server, tmp_path):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url)
            page.wait_for_function("() => window.editor.ready === true && window.editor.busy === 0", timeout=60000)
            assert page.locator("#file-name").text_content() == "duet.mid"
            assert page.locator("#tracks select").count() == 2
            assert page.locator("#tracks select").first.input_value() == "violin"
            # every note is painted where its rectangle is: the roll is redrawn when the page's own layout (the
            # tracks table filling in) changes its width, not stretched from an earlier picture
            saturation = page.evaluate("""() => {
                const canvas = document.getElementById("roll"), context = canvas.getContext("2d");
                const scale = canvas.width / canvas.clientWidth;
                return window.editor.session.notes.map((note) => {
                    const box = noteBox(note, rollGeometry());
                    const [r, g, b] = context.getImageData(Math.round((box.x + box.w / 2) * scale),
                                                           Math.round((box.y + box.h / 2) * scale), 1, 1).data;
                    return Math.max(r, g, b) - Math.min(r, g, b);  // the grid is grey, the notes coloured
                }); }""")
            assert len(saturation) == 9 and min(saturation) > 60, saturation
            before = page_audio(page)

            # select the violin's fourth note with the mouse, move its volume slider to the top
            rect = page.evaluate("() => window.editor.noteRect('0.0.3')")
            page.mouse.click(rect["x"] + rect["w"] / 2, rect["y"] + rect["h"] / 2)
            page.wait_for_function("() => window.editor.selected.has('0.0.3') && window.editor.selected.size === 1")
            assert "note 0.0.3" in page.locator("#selection-count").text_content()
            page.wait_for_function("() => window.editor.busy === 0")
            assert page.locator("#curves").is_visible()
            note = page.evaluate("() => window.editor.notesById.get('0.0.3')")
            version = page.evaluate("() => window.editor.audioVersion")
            page.locator("#slider-volume").fill("1")
            wait_for_render(page, version)
            assert page.evaluate("() => window.editor.notesById.get('0.0.3').controls.volume") == 1.0
            after = page_audio(page)
            louder = (span_db(after, note["start"] + 0.05, note["end"])
                      - span_db(before, note["start"] + 0.05, note["end"]))
            assert louder > 3.0, louder
            early = slice(0, int(1.5 * SAMPLE_RATE))  # before the note and beyond the generator's context
            assert np.abs(after[early] - before[early]).max() < 1e-6

            # undo: the audio comes back bit for bit
            version = page.evaluate("() => window.editor.audioVersion")
            page.locator("#undo").click()
            wait_for_render(page, version)
            assert np.array_equal(page_audio(page), before)

            # the table saved from the page is the API's table
            with page.expect_download() as download:
                page.locator("#save-csv").click()
            saved = tmp_path / "saved.csv"
            download.value.save_as(saved)
            with urllib.request.urlopen(server.url + "api/expression.csv") as response:
                assert saved.read_bytes() == response.read()
            assert download.value.suggested_filename == "duet.csv"

            # a bad table: the page says what is wrong, and the state is unchanged
            bad = tmp_path / "bad.csv"
            bad.write_text(saved.read_text().replace("track,voice", "track,choir", 1))
            assert page.locator("#error").is_hidden()
            page.locator("#load-csv").set_input_files(str(bad))
            page.wait_for_selector("#error", state="visible", timeout=30000)
            message = page.locator("#error-text").text_content()
            assert "expression table" in message and "choir" in message, message
            with urllib.request.urlopen(server.url + "api/expression.csv") as response:
                assert saved.read_bytes() == response.read()
        finally:
            browser.close()
    assert errors == []
