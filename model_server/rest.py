"""The V2 REST front end on aiohttp.

Handlers decode, call the ``InferenceService`` and encode; they hold no model logic. Errors
become ``{"error": "..."}`` with their status in one middleware, so every path (aiohttp's
own 404/405/413 included) answers the same shape.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import ModelServerError
from .inference import InferenceService
from .metrics import CLIENT_CLOSED
from .rest_codec import HEADER_LENGTH, decode_request, encode_response

__all__ = ["build_rest_app", "SERVICE_KEY", "BODY_LIMIT_KEY"]

log = logging.getLogger("sidemesh.model_server")
SERVICE_KEY = web.AppKey("service", InferenceService)
BODY_LIMIT_KEY = web.AppKey("max_body_bytes", int)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ModelServerError as exc:
        return _error(exc.http_status, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[BODY_LIMIT_KEY]
        return _error(413, f"request body is over the server's limit of {limit} bytes (--max-body-bytes)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return _error(500, "internal error in the model server; the server log has the details")


def _service(request: web.Request) -> InferenceService:
    return request.app[SERVICE_KEY]


async def _server_metadata(request: web.Request) -> web.Response:
    return web.json_response(_service(request).server_metadata())


async def _live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def _ready(request: web.Request) -> web.Response:
    registry = _service(request).registry
    if not registry.ready:
        waiting = [f"{v.model_name}/{v.version} ({v.state})" for v in registry.all_versions() if not v.ready]
        return _error(503, f"not ready: {', '.join(waiting)}")
    return web.json_response({"ready": True})


async def _model_metadata(request: web.Request) -> web.Response:
    info = request.match_info
    return web.json_response(_service(request).model_metadata(info["model"], info.get("version")))


async def _model_ready(request: web.Request) -> web.Response:
    info = request.match_info
    entry = _service(request).registry.ready_version(info["model"], info.get("version"))
    return web.json_response({"name": entry.model_name, "version": entry.version, "ready": True})


async def _infer(request: web.Request) -> web.Response:
    started = time.monotonic()
    service = _service(request)
    model, version, code = "", "", 500
    try:
        entry = service.resolve(request.match_info["model"], request.match_info.get("version"))
        model, version = entry.model_name, entry.version
        body = await request.read()
        decoded = decode_request(model, version, body, request.headers.get(HEADER_LENGTH))
        payload, json_length = encode_response(await service.infer(entry, decoded))
        code = 200
    except ModelServerError as exc:
        code = exc.http_status
        raise
    except web.HTTPException as exc:
        code = exc.status
        raise
    except asyncio.CancelledError:
        code = CLIENT_CLOSED  # the caller hung up; not a server error
        raise
    finally:
        service.metrics.request_done(model, version, code, time.monotonic() - started)
    if json_length is None:
        return web.Response(body=payload, content_type="application/json")
    return web.Response(
        body=payload, content_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)}
    )


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(_service(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_rest_app(service: InferenceService, max_body_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_errors])
    app[SERVICE_KEY] = service
    app[BODY_LIMIT_KEY] = max_body_bytes
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    app.router.add_get("/v2", _server_metadata)
    app.router.add_get("/v2/health/live", _live)
    app.router.add_get("/v2/health/ready", _ready)
    for prefix in (model, versioned):
        app.router.add_get(prefix, _model_metadata)
        app.router.add_get(prefix + "/ready", _model_ready)
        app.router.add_post(prefix + "/infer", _infer)
    app.router.add_get("/metrics", _metrics)
    return app
