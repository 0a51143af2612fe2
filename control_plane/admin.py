"""The admin REST API: read and change the routing state, list the nodes.

Handlers parse, call the ``RouteStore`` and answer JSON; validation lives in ``routing``
and history in ``store``. Every ``/v1`` handler is registered through ``guard``, which
checks the bearer token (reads need any token, changes an ``admin`` one) and hands the
handler the token's name as the author; a handler registered without it would fail
rather than serve unauthenticated. Errors become ``{"error": "..."}`` with their status in
one middleware, so every path (aiohttp's own 404/405/413 included) answers the same shape.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import hdrs, web

from .auth import TokenAuth
from .errors import ControlPlaneError, Unauthorized, ValidationError
from .openapi import openapi_document
from .routing import Route
from .store import Change, RouteStore

__all__ = ["AdminState", "ADMIN_KEY", "ANONYMOUS", "build_admin_app", "guard", "json_body"]

log = logging.getLogger("sidemesh.control_plane")
ANONYMOUS = "anonymous"  # the author of changes made when the API runs without tokens
MAX_HISTORY = 1000
_EXAMPLE = '{"backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}'


@dataclass(frozen=True)
class AdminState:
    store: RouteStore
    nodes: Callable[[], list[dict]]
    on_change: Callable[[], None]  # called after every accepted change, e.g. to push snapshots
    auth: TokenAuth | None  # None: open, every change is made by ANONYMOUS


ADMIN_KEY = web.AppKey("admin", AdminState)
Handler = Callable[[web.Request, str], Awaitable[web.Response]]


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Unauthorized as exc:
        return _error(exc.http_status, str(exc), {hdrs.WWW_AUTHENTICATE: 'Bearer realm="sidemesh"'})
    except ControlPlaneError as exc:
        if exc.http_status >= 500:
            log.exception("%s %s failed", request.method, request.path)
        return _error(exc.http_status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {hdrs.ALLOW: exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}; the API is described at /openapi.json", allow)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return _error(500, "internal error in the control plane; its log has the details")


def guard(handler: Handler, write: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def guarded(request: web.Request) -> web.Response:
        auth = request.app[ADMIN_KEY].auth
        author = ANONYMOUS if auth is None else auth.check(request.headers.get(hdrs.AUTHORIZATION), write)
        return await handler(request, author)

    return guarded


async def json_body(request: web.Request, example: str = "a route document such as " + _EXAMPLE) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting past the recursion limit
        raise ValidationError("", f"the request body is not valid JSON ({exc}); send {example}") from None


def _applied(state: AdminState, change: Change) -> web.Response:
    state.on_change()
    return web.json_response({"model": change.model, "version": change.version, "route": change.route, "diff": change.diff})


async def _list_routes(request: web.Request, author: str) -> web.Response:
    store = request.app[ADMIN_KEY].store
    routes = {model: {"version": v, "route": route.to_dict()} for model, (route, v) in store.routes().items()}
    # Read after the routes, so the global version is never behind one of theirs.
    return web.json_response({"version": store.version, "routes": routes})


async def _get_route(request: web.Request, author: str) -> web.Response:
    model = request.match_info["model"]
    route, version = request.app[ADMIN_KEY].store.get(model)
    return web.json_response({"model": model, "version": version, "route": route.to_dict()})


async def _put_route(request: web.Request, author: str) -> web.Response:
    state = request.app[ADMIN_KEY]
    route = Route.from_dict(request.match_info["model"], await json_body(request))
    return _applied(state, state.store.put(route, author))


async def _delete_route(request: web.Request, author: str) -> web.Response:
    state = request.app[ADMIN_KEY]
    change = state.store.delete(request.match_info["model"], author)
    state.on_change()
    return web.json_response({"model": change.model, "version": change.version})


async def _rollback(request: web.Request, author: str) -> web.Response:
    state = request.app[ADMIN_KEY]
    return _applied(state, state.store.rollback(request.match_info["model"], author))


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_HISTORY:
        raise ValidationError("limit", f"expected an integer between 1 and {MAX_HISTORY}, got {text!r}")
    return limit


async def _history(request: web.Request, author: str) -> web.Response:
    limit = _limit(request.query.get("limit", "100"))
    changes = request.app[ADMIN_KEY].store.history(request.query.get("model"), limit)
    return web.json_response({"changes": [c.to_dict() for c in changes]})


async def _nodes(request: web.Request, author: str) -> web.Response:
    return web.json_response({"nodes": request.app[ADMIN_KEY].nodes()})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build_admin_app(
    store: RouteStore, nodes: Callable[[], list[dict]], on_change: Callable[[], None], auth: TokenAuth | None
) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[ADMIN_KEY] = AdminState(store, nodes, on_change, auth)
    route = "/v1/routes/{model}"
    for path, handler in (("/v1/routes", _list_routes), (route, _get_route), ("/v1/history", _history), ("/v1/nodes", _nodes)):
        app.router.add_get(path, guard(handler, write=False))
    app.router.add_put(route, guard(_put_route, write=True))
    app.router.add_delete(route, guard(_delete_route, write=True))
    app.router.add_post(route + "/rollback", guard(_rollback, write=True))
    app.router.add_get("/openapi.json", _openapi)  # public: no token needed
    app.router.add_get("/healthz", _health)
    return app
