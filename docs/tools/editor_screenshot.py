"""The editor's picture in docs/ (docs/editor.png): the bundled demo file in the page, one note selected.

    python docs/tools/editor_screenshot.py [-o docs/editor.png]

Needs what the browser test needs: the playwright package and Debian's Chromium (no browser download).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import mididdsp
from mididdsp.editor.server import EditorServer
from mididdsp.editor.session import EditorSession
from mididdsp.score import read_midi

DEMO = Path(mididdsp.__file__).parent / "data" / "demo.mid"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/editor.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    session = EditorSession(mididdsp.load_model(), read_midi(DEMO), seed=0, name=DEMO.name)
    server = EditorServer(session, "127.0.0.1", 0).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(server.url)
            page.wait_for_function("() => window.editor.ready === true && window.editor.busy === 0", timeout=120000)
            note_id = page.evaluate("() => [...window.editor.notesById.keys()][5]")
            rect = page.evaluate(f"() => window.editor.noteRect('{note_id}')")
            page.mouse.click(rect["x"] + rect["w"] / 2, rect["y"] + rect["h"] / 2)
            page.wait_for_function("() => window.editor.busy === 0", timeout=120000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(args.output))
            browser.close()
    finally:
        server.stop()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
