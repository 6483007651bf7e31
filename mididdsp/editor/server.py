"""The editor's web server: the JSON API and the page over an :class:`~mididdsp.editor.session.EditorSession`
(the ``edit`` command, :mod:`mididdsp.editor.command`, starts it).

The server is aiohttp (docs/editor.md says why). It serves the page shipped in ``static/`` and the JSON API the
page uses (documented in docs/editor.md); nothing else. Safe by default: it binds to 127.0.0.1; a request whose
``Host`` header is not the server's own name (DNS rebinding) is refused with 403, and so is a state-changing request
whose ``Origin`` is another site; no request names a path on disk (the static files are read once, by name, from
the package); bodies over :data:`MAX_BODY` bytes are refused. Every error is a JSON ``{"error": "..."}`` with a 4xx
status (5xx for a render that failed), and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import threading
import traceback
from importlib import resources
from typing import Any, Awaitable, Callable

from aiohttp import web

from mididdsp.editor.command import DEFAULT_PORT
from mididdsp.editor.session import ApiError, EditorSession
from mididdsp.errors import MididdspError

MAX_BODY = 1 << 20          # bytes: a larger request body is refused (413)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                ".txt": "text/plain"}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' blob:; "
               "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def host_header(host: str, port: int) -> str:
    """The ``Host`` header a browser sends for ``host:port`` (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package: {name: (content, content type)}. Requests look names up
    here; none is turned into a path."""
    folder = resources.files("mididdsp.editor") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


class EditorApp:
    """The aiohttp application over one session: routes, the security checks and the JSON errors."""

    def __init__(self, session: EditorSession, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.session = session
        self.static = static_files()
        self.set_address(host, port)
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self.guard])
        self.app.add_routes([
            web.get("/", self.page), web.get("/static/{name}", self.static_file),
            web.get("/api/session", self.get_session), web.patch("/api/notes", self.patch_notes),
            web.patch("/api/tracks", self.patch_tracks), web.post("/api/resample", self.post_resample),
            web.post("/api/undo", self.post_undo), web.post("/api/redo", self.post_redo),
            web.post("/api/render", self.post_render), web.get("/api/expression.csv", self.get_csv),
            web.put("/api/expression.csv", self.put_csv), web.get("/api/notes/{id}/curves", self.get_curves)])

    def set_address(self, host: str, port: int) -> None:
        """The names this server answers to: its loopback names on ``port`` (and ``host`` itself if it is not
        one); and the origins whose pages may change its state (the same names, over http)."""
        names = set(LOOPBACK_NAMES) | {host}
        self.hosts = {host_header(name, port).lower() for name in names}
        self.origins = {f"http://{name}" for name in self.hosts}

    # ------------------------------------------------------------------------------------------- middleware
    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        """Refuse foreign Host and Origin headers and large bodies; turn every failure into a JSON error."""
        host = request.headers.get("Host", "").lower()
        if host not in self.hosts:
            return json_error(403, f"Host {host!r} refused: this editor answers only to {sorted(self.hosts)[0]} "
                                   f"(protection against DNS rebinding)")
        origin = request.headers.get("Origin")
        if request.method not in SAFE_METHODS and origin is not None and origin.lower() not in self.origins:
            return json_error(403, f"Origin {origin!r} refused: only this editor's own page may change its state")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return json_error(413, f"request body of {request.content_length} bytes; at most {MAX_BODY}")
        try:
            response = await handler(request)
        except ApiError as error:
            return json_error(error.status, error.message)
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"request body over {MAX_BODY} bytes")
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return json_error(error.status, error.reason or "error")
        except MididdspError as error:
            return json_error(500, f"render failed: {error}")
        except Exception as error:  # a bug: keep serving, say so, leave the traceback for the terminal
            traceback.print_exc()
            return json_error(500, f"internal error ({error.__class__.__name__}: {error}); see the terminal")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    # ------------------------------------------------------------------------------------------- helpers
    async def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a session method in a worker thread (renders take a while; the server keeps answering)."""
        return await asyncio.get_running_loop().run_in_executor(None, method, *args)

    @staticmethod
    async def json_body(request: web.Request, required: bool = True) -> Any:
        """The request's JSON body (None when empty and not ``required``); ApiError for malformed JSON."""
        data = await request.read()
        if not data.strip():
            if required:
                raise ApiError(400, "empty body; expected JSON")
            return None
        if request.content_type != "application/json":
            raise ApiError(415, f"Content-Type {request.content_type!r}; expected application/json")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ApiError(400, f"malformed JSON: {error}") from None

    # ------------------------------------------------------------------------------------------- routes
    async def page(self, request: web.Request) -> web.Response:
        return await self.static_file(request, "index.html")

    async def static_file(self, request: web.Request, name: str | None = None) -> web.Response:
        name = name or request.match_info["name"]
        if name not in self.static:
            raise ApiError(404, f"no such file {name!r}")
        content, content_type = self.static[name]
        headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"}
        return web.Response(body=content, content_type=content_type, charset="utf-8", headers=headers)

    async def get_session(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(self.session.state))

    async def patch_notes(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        if not isinstance(body, dict) or "edits" not in body:
            raise ApiError(400, "expected {\"edits\": [{\"id\": ..., control: value}, ...]}")
        return web.json_response(await self.call(self.session.edit_notes, body["edits"]))

    async def patch_tracks(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        if not isinstance(body, dict) or "edits" not in body:
            raise ApiError(400, "expected {\"edits\": [{\"index\": track, \"instrument\": name}, ...]}")
        return web.json_response(await self.call(self.session.set_instruments, body["edits"]))

    async def post_resample(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(self.session.resample, await self.json_body(request)))

    async def post_undo(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(await self.call(self.session.undo))

    async def post_redo(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(await self.call(self.session.redo))

    async def post_render(self, request: web.Request) -> web.Response:
        body = await self.json_body(request, required=False)
        wav, messages = await self.call(self.session.render_wav, body)
        return web.Response(body=wav, content_type="audio/wav",
                            headers={"X-Render-Messages": json.dumps(messages),
                                     "Content-Disposition": 'inline; filename="render.wav"'})

    async def get_csv(self, request: web.Request) -> web.Response:
        text = await self.call(self.session.expression_csv)
        return web.Response(text=text, content_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="expression.csv"'})

    async def put_csv(self, request: web.Request) -> web.Response:
        data = await request.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "expression table: not UTF-8 text; expected the CSV that GET /api/expression.csv "
                                "gives") from None
        return web.json_response(await self.call(self.session.load_csv, text))

    async def get_curves(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(self.session.curves, request.match_info["id"]))


class EditorServer:
    """The editor served from a background thread: :meth:`start` returns once it listens (its address in
    :attr:`url`), :meth:`stop` closes it. The command, the tests and the benchmark all use this."""

    def __init__(self, session: EditorSession, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.editor = EditorApp(session, host, port)
        self.host, self.port = host, port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mididdsp-editor", daemon=True)
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{host_header(self.host, self.port)}/"

    def start(self) -> "EditorServer":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()
        return self

    async def _start(self) -> None:
        # shutdown_timeout: on Ctrl-C wait at most this long for open connections (aiohttp's default is 60 s)
        self.runner = web.AppRunner(self.editor.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await self.runner.cleanup()
            raise MididdspError(f"cannot listen on {host_header(self.host, self.port)} ({error.strerror or error}); "
                                f"choose another --port") from None
        self.port = site._server.sockets[0].getsockname()[1] if self.port == 0 else self.port  # type: ignore[union-attr]
        self.editor.set_address(self.host, self.port)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
            self.runner = None
            # the worker threads of the requests (not daemons): idle, they would wait for work until the loop is
            # collected, and a process that joins its threads before leaving would wait with them
            asyncio.run_coroutine_threadsafe(self.loop.shutdown_default_executor(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
