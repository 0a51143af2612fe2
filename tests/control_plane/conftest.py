"""The real admin app for tests: served by aiohttp from a background thread with its own
event loop, on a free loopback port, over a fresh in-memory store.

``admin`` checks tokens (an admin token and a read token from a token file); ``open_admin``
runs without them. Both record every ``on_change`` call and serve whatever nodes a test
puts in ``.nodes``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
from aiohttp import web

from control_plane.admin import build_admin_app
from control_plane.auth import TokenAuth
from control_plane.store import RouteStore

ADMIN_TOKEN = "admin-token-7f3a9c"
READ_TOKEN = "read-token-52e1d0"
TOKEN_FILE = f"""# sidemesh admin tokens
alice {ADMIN_TOKEN} admin

viewer {READ_TOKEN} read
"""


class ThreadedApp:
    """Serves an aiohttp app on 127.0.0.1, port 0, from a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="admin-app", daemon=True)

    def __enter__(self) -> "ThreadedApp":
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise AssertionError("the admin app did not start within 10 s")
        if self._failure is not None:
            raise self._failure
        return self

    def _serve(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        runner = web.AppRunner(self.app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
            self.port = runner.addresses[0][1]
        except BaseException as exc:
            self._failure = exc
        self._ready.set()
        if self._failure is None:
            loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __exit__(self, *exc_info) -> None:
        if self._thread.is_alive() and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Admin:
    url: str
    store: RouteStore
    changes: list[int] = field(default_factory=list)  # the store's version at each on_change call
    nodes: list[dict] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN,
             raw: bytes | None = None) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Reply(response.status, dict(response.headers), json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, dict(exc.headers), json.loads(exc.read()))


@contextmanager
def serve_admin(auth: TokenAuth | None) -> Iterator[Admin]:
    store = RouteStore(":memory:")
    admin = Admin(url="", store=store)
    app = build_admin_app(store, lambda: list(admin.nodes), lambda: admin.changes.append(store.version), auth)
    try:
        with ThreadedApp(app) as served:
            admin.url = f"http://127.0.0.1:{served.port}"
            yield admin
    finally:
        store.close()


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(TOKEN_FILE)
    return path


@pytest.fixture
def admin(token_file) -> Iterator[Admin]:
    with serve_admin(TokenAuth.load(token_file)) as served:
        yield served


@pytest.fixture
def open_admin() -> Iterator[Admin]:
    with serve_admin(None) as served:
        yield served
