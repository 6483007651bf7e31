"""``mididdsp edit song.mid``: start the web editor on a MIDI file (docs/editor.md).

    mididdsp edit song.mid [--model DIR] [--expression-in TABLE.csv] [--port 8765] [--host 127.0.0.1] [--no-browser]

Prints the page's address on one line and opens it in the browser; Ctrl-C stops the server. Kept apart from
:mod:`mididdsp.editor.server` so that ``mididdsp --help`` does not import the web server, torch or the model.
"""
from __future__ import annotations

import argparse
import sys

from mididdsp.errors import MididdspError

DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("midi", help="MIDI file (.mid) to edit")
    parser.add_argument("--model", default=None, help="MIDI model directory (default: the shipped model)")
    parser.add_argument("--expression-in", default=None, help="start from this note expression table (CSV/JSON)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first expression and of the noise (default 0)")
    parser.add_argument("--temperature", type=float, default=1.0, help="the prior's temperature (default 1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--no-browser", dest="browser", action="store_false", help="do not open a browser")


def run(args: argparse.Namespace) -> int:
    import threading
    import time
    import webbrowser
    from pathlib import Path

    from mididdsp.editor.server import EditorServer
    from mididdsp.editor.session import EditorSession
    from mididdsp.render import load_model
    from mididdsp.score import read_midi

    if not 0 <= args.port <= 65535:
        raise MididdspError(f"--port {args.port}: expected 0..65535")
    if not is_loopback(args.host):
        print(f"warning: --host {args.host} is not a loopback address: anyone who can reach it can edit and "
              f"render on this machine", file=sys.stderr)
    score = read_midi(args.midi)
    model = load_model(args.model)
    expression = None
    if args.expression_in:
        from mididdsp.expression.table import NoteExpression

        expression = NoteExpression.load(args.expression_in, ranges=model.ranges)
    try:
        session = EditorSession(model, score, expression, seed=args.seed, temperature=args.temperature,
                                name=Path(args.midi).name)
    except MididdspError as error:
        raise MididdspError(f"{args.expression_in}: {error}" if args.expression_in else str(error)) from None
    from mididdsp.parallel import threads

    # warm: every voice rendered once before the page asks, in forked copies while no server thread runs yet
    session.update_audio(processes=threads())
    server = EditorServer(session, args.host, args.port).start()
    print(server.url, flush=True)
    if args.browser:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.stop()
    return 0
