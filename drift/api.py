"""The drift detector's HTTP API: references, windows, evaluations, verdicts, alert history.

Handlers parse, call ``DriftService`` and answer JSON. Errors become ``{"error": "..."}``
with their status in one middleware (400 for the caller's mistakes naming the field, 404
for an unknown model/version/reference), aiohttp's own 404/405/413 included.
"""

from __future__ import annotations

import logging
import math

import orjson
from aiohttp import web
from google.protobuf.message import DecodeError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import report
from .errors import DriftError, InvalidInput, NotFound, SketchError
from .proto import stats_pb2 as pb
from .reference import sketch_array
from .service import DriftService
from .sketch import InputSketch

__all__ = ["SERVICE_KEY", "OUTBOX_KEY", "build_app"]

log = logging.getLogger("sidemesh.drift")
SERVICE_KEY = web.AppKey("service", DriftService)
OUTBOX_KEY = web.AppKey("outbox", object)
MAX_BODY = 256 * 1024 * 1024
# Far more rows than any reference needs; the store keeps the target as a signed 64-bit integer.
MAX_CAPTURE_ROWS = 2**40
_QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)


def _json(value, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                        content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (InvalidInput, SketchError) as exc:
        return _error(400, str(exc))
    except NotFound as exc:
        return _error(404, str(exc))
    except DriftError as exc:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason if exc.status != 404 else f"no such endpoint: {request.method} {request.path}")


def _service(request: web.Request) -> DriftService:
    return request.app[SERVICE_KEY]


def _limit(request: web.Request, default: int = 50) -> int:
    text = request.query.get("limit", str(default))
    # ASCII digits, and few of them: int() refuses other Unicode digits ("²") and numbers of thousands of digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not 0 < int(text) <= 10000:
        raise InvalidInput(f"limit: expected a whole number 1-10000, got {text!r}")
    return int(text)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _feature_summary(sketch: InputSketch, index: int) -> dict:
    f = sketch.features[index]
    out = {"feature": index, "name": sketch.feature_name(index), "count": f.count, "missing": f.missing,
           "categorical": f.categorical}
    if f.count and not f.kll.is_empty():
        out.update(mean=_finite(f.mean), std=_finite(math.sqrt(f.variance)) if f.count > 1 else None,
                   min=_finite(f.min), max=_finite(f.max),
                   quantiles=dict(zip((str(q) for q in _QUANTILES), f.kll.get_quantiles(list(_QUANTILES)))))
    if f.categories or f.other:
        top = sorted(f.categories.items(), key=lambda kv: -kv[1])[:20]
        out.update(categories=dict(top), distinct=len(f.categories), other=f.other)
    return out


async def _live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def _ready(request: web.Request) -> web.Response:
    return _json({"ready": True})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(_service(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _references(request: web.Request) -> web.Response:
    return _json({"references": _service(request).reference_list()})


async def _reference(request: web.Request) -> web.Response:
    service = _service(request)
    model, version = request.match_info["model"], request.match_info["version"]
    inputs = service.references.get((model, version))
    capture = service.captures.get((model, version))
    if inputs is None and capture is None:
        raise NotFound(f"no reference for model {model!r} version {version!r}; build one with "
                       f"`sidemesh drift reference {model} --version {version} --data FILE`")
    out: dict = {"model": model, "version": version, "inputs": []}
    for name, sketch in sorted((inputs or {}).items()):
        source, at = service.reference_meta.get((model, version, name), ("", 0.0))
        out["inputs"].append({"input": name, "datatype": sketch.datatype, "rows": sketch.rows, "source": source,
                              "created_at": at,
                              "features": [_feature_summary(sketch, i) for i in range(len(sketch.features))]})
    if capture is not None:
        out["capture"] = {"rows": capture[1].rows, "rows_wanted": capture[0], "started_at": capture[1].started_at}
    return _json(out)


def _parse_reference(body: bytes, content_type: str, model: str, version: str, input_name: str | None
                     ) -> dict[str, InputSketch]:
    if content_type in ("application/x-protobuf", "application/protobuf", "application/octet-stream"):
        try:
            message = pb.InputStats.FromString(body)
        except DecodeError as exc:
            raise InvalidInput(f"body: not a serialized sidemesh.drift.v1.InputStats message ({exc})") from None
        for field, want in (("model", model), ("version", version)):
            got = getattr(message, field)
            if got and got != want:
                raise InvalidInput(f"body.{field}: {got!r} does not match the path's {want!r}")
        return {input_name if input_name is not None else message.input: InputSketch.from_proto(message, "body")}
    if content_type == "application/json":
        from model_server.errors import InvalidInput as V2Invalid
        from model_server.rest_codec import decode_request

        try:
            request = decode_request(model, version, body, None)
        except V2Invalid as exc:
            raise InvalidInput(f"body: {exc}") from None
        if input_name is not None:
            picked = [t for t in request.inputs if t.name == input_name]
            if not picked:
                raise InvalidInput(f"input: {input_name!r} is not among the body's inputs")
            return {input_name: sketch_array(picked[0].data, picked[0].datatype)}
        return {t.name: sketch_array(t.data, t.datatype) for t in request.inputs}
    raise InvalidInput(f"Content-Type: expected application/json (V2 tensors) or application/x-protobuf "
                       f"(InputStats, what `sidemesh drift reference` sends), got {content_type!r}")


async def _put_reference(request: web.Request) -> web.Response:
    service = _service(request)
    model, version = request.match_info["model"], request.match_info["version"]
    body = await request.read()
    if not body:
        raise InvalidInput("body: empty; send the reference's statistics or V2 JSON tensors")
    refs = _parse_reference(body, request.content_type, model, version, request.query.get("input"))
    for name, sketch in refs.items():
        if sketch.rows == 0:
            raise InvalidInput(f"input {name!r}: the reference has no rows")
        service.put_reference(model, version, name, sketch, "upload")
    return _json({"model": model, "version": version,
                  "inputs": [{"input": n, "rows": s.rows, "features": len(s.features)} for n, s in refs.items()]}, 201)


async def _delete_reference(request: web.Request) -> web.Response:
    _service(request).delete_reference(request.match_info["model"], request.match_info["version"])
    return web.Response(status=204)


async def _capture(request: web.Request) -> web.Response:
    model, version = request.match_info["model"], request.match_info["version"]
    try:
        doc = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body: not valid JSON ({exc})") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 < rows <= MAX_CAPTURE_ROWS:
        raise InvalidInput(f"rows: expected a whole number of rows from 1 to 2**40 to capture, got {rows!r}")
    _service(request).start_capture(model, version, rows)
    return _json({"model": model, "version": version, "capturing": True, "rows_wanted": rows}, 202)


async def _windows(request: web.Request) -> web.Response:
    import time

    now = time.time()
    service = _service(request)
    return _json({"windows": [w.describe(now) for _, w in sorted(service.windows.open.items())],
                  "policy": {"rows": service.policy.windows.rows, "seconds": service.policy.windows.seconds}})


async def _close_windows(request: web.Request) -> web.Response:
    """Close every open window now; with ``?wait=true`` answer once they are evaluated."""
    service = _service(request)
    service.flush()
    if request.query.get("wait") in ("1", "true"):
        await service.wait_idle()
    return _json({"closed": True}, 202)


async def _models(request: web.Request) -> web.Response:
    service = _service(request)
    keys = sorted(set(service.latest) | set(service.references) | set(service.windows.open))
    out = []
    for model, version in keys:
        latest = service.latest.get((model, version), {})
        out.append({"model": model, "version": version, "verdict": latest.get("verdict"),
                    "evaluated_at": latest.get("evaluated_at"), "reference": (model, version) in service.references,
                    "alert": service.tracker.status(model, version)})
    return _json({"models": out})


async def _model(request: web.Request) -> web.Response:
    service = _service(request)
    key = (request.match_info["model"], request.match_info["version"])
    latest = service.latest.get(key)
    if latest is None:
        raise NotFound(f"no evaluated window for model {key[0]!r} version {key[1]!r} yet")
    return _json(latest)


async def _evaluations(request: web.Request) -> web.Response:
    model, version = request.match_info["model"], request.match_info["version"]
    return _json({"evaluations": _service(request).store.evaluations(model, version, _limit(request))})


async def _alerts(request: web.Request) -> web.Response:
    outbox = request.app[OUTBOX_KEY]
    service = _service(request)
    return _json({"alerts": outbox.history(_limit(request), request.query.get("model"), request.query.get("version")),
                  "firing": [e.to_dict() for e in service.tracker.firing()]})


def _html(page: str) -> web.Response:
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=report.HEADERS)


async def _report_index(request: web.Request) -> web.Response:
    return _html(await report.index_page(_service(request)))


async def _report(request: web.Request) -> web.Response:
    """The HTML drift report of one model (see ``report``): ``?version=&features=&limit=&history=&window=``."""
    return _html(await report.model_page(_service(request), request.match_info["model"], request.query))


def build_app(service: DriftService, outbox) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[SERVICE_KEY] = service
    app[OUTBOX_KEY] = outbox
    r = app.router
    r.add_get("/healthz/live", _live)
    r.add_get("/healthz/ready", _ready)
    r.add_get("/metrics", _metrics)
    r.add_get("/v1/references", _references)
    r.add_get("/v1/references/{model}/{version}", _reference)
    r.add_put("/v1/references/{model}/{version}", _put_reference)
    r.add_delete("/v1/references/{model}/{version}", _delete_reference)
    r.add_post("/v1/references/{model}/{version}/capture", _capture)
    r.add_get("/v1/windows", _windows)
    r.add_post("/v1/windows/close", _close_windows)
    r.add_get("/v1/models", _models)
    r.add_get("/v1/models/{model}/versions/{version}", _model)
    r.add_get("/v1/models/{model}/versions/{version}/evaluations", _evaluations)
    r.add_get("/v1/alerts", _alerts)
    r.add_get("/report", _report_index)
    r.add_get("/report/{model}", _report)
    return app
