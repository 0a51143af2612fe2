"""The admin API's OpenAPI 3.1 description, served at ``/openapi.json``.

The route schema states the same limits ``routing.py`` enforces (and reads its constants),
so tools can check a document before sending it; the server's validation stays the
authority, with field-naming errors the schema cannot express (a mirror's target must be
a weight-0 backend, weights must not all be 0).
"""

from __future__ import annotations

import copy

from .routing import _HEADER, MAX_TIMEOUT_MS, NAME, RETRY_ON  # one source for the limits

__all__ = ["openapi_document"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": ("Error", "the request is invalid; the message names the field at fault"),
    "401": ("Error", "missing or unknown bearer token"),
    "403": ("Error", "a read token attempted a change"),
    "404": ("Error", "no route for this model"),
    "409": ("Error", "the change cannot apply to the current state"),
}


def _responses(ok: str, description: str, *errors: str) -> dict:
    out = {"200": _json(_ref(ok), description)}
    for code in ("401", *errors):
        out[code] = _json(_ref(_ERRORS[code][0]), _ERRORS[code][1])
    return out


_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME.pattern}}
_VERSION = {"type": "string", "pattern": NAME.pattern}
_MS = {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS}

_SCHEMAS: dict = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string", "description": "what went wrong and what to do"}},
    },
    "Backend": {
        "type": "object", "additionalProperties": False, "required": ["version", "weight"],
        "properties": {
            "version": _VERSION,
            "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000,
                       "description": "relative share of the model's traffic; 0 for a mirror-only target"},
            "endpoints": {"type": "array", "items": {"type": "string", "description": "host:port"},
                          "description": "static endpoints, added to the sidecars that register for this version"},
        },
    },
    "Mirror": {
        "type": "object", "additionalProperties": False, "required": ["version", "percent"],
        "properties": {
            "version": {**_VERSION, "description": "a backend with weight 0"},
            "percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        },
    },
    "Route": {
        "type": "object", "additionalProperties": False, "required": ["backends"],
        "properties": {
            "backends": {"type": "array", "minItems": 1, "items": _ref("Backend")},
            "mirrors": {"type": "array", "items": _ref("Mirror"), "default": []},
            "sticky_key": {"type": ["string", "null"], "pattern": _HEADER.pattern, "default": None,
                           "description": "request header whose value pins a caller to one version"},
            "timeout_ms": {**_MS, "default": 30_000},
            "retry": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "attempts": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                    "per_try_timeout_ms": {"oneOf": [_MS, {"type": "null"}], "default": None},
                    "on": {"type": "array", "items": {"enum": list(RETRY_ON)},
                           "default": ["connect-failure", "refused-stream", "reset"]},
                },
            },
            "sidecar": {
                "type": "object", "additionalProperties": False,
                "description": "knobs only the sidemesh sidecar reads",
                "properties": {
                    "stats_sample": {"type": "number", "minimum": 0, "maximum": 1, "default": 1.0,
                                     "description": "share of requests whose inputs feed the drift statistics"},
                    "compare": {"type": "boolean", "default": True,
                                "description": "compare mirrored answers with the primary's"},
                },
            },
        },
    },
    "RouteEntry": {
        "type": "object", "required": ["model", "version", "route"],
        "properties": {"model": {"type": "string"}, "version": {"type": "integer"}, "route": _ref("Route")},
    },
    "RouteList": {
        "type": "object", "required": ["version", "routes"],
        "properties": {
            "version": {"type": "integer", "description": "the latest change's version, across models"},
            "routes": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["version", "route"],
                "properties": {"version": {"type": "integer"}, "route": _ref("Route")},
            }},
        },
    },
    "Diff": {
        "type": "object", "description": 'changed paths with [old, new], e.g. {"backends.v2.weight": [10, 50]}',
        "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 2},
    },
    "Applied": {
        "type": "object", "required": ["model", "version", "route", "diff"],
        "properties": {"model": {"type": "string"}, "version": {"type": "integer"},
                       "route": _ref("Route"), "diff": _ref("Diff")},
    },
    "Deleted": {
        "type": "object", "required": ["model", "version"],
        "properties": {"model": {"type": "string"}, "version": {"type": "integer"}},
    },
    "Change": {
        "type": "object", "required": ["version", "model", "at", "author", "action", "route", "diff"],
        "properties": {
            "version": {"type": "integer"}, "model": {"type": "string"},
            "at": {"type": "number", "description": "Unix time"},
            "author": {"type": "string", "description": "the name of the token that made the change"},
            "action": {"enum": ["put", "delete", "rollback"]},
            "route": {"oneOf": [_ref("Route"), {"type": "null"}]}, "diff": _ref("Diff"),
        },
    },
    "History": {
        "type": "object", "required": ["changes"],
        "properties": {"changes": {"type": "array", "items": _ref("Change"), "description": "newest first"}},
    },
    "Node": {
        "type": "object",
        "required": ["id", "model", "version", "address", "connected", "connected_at", "acked_state_version", "last_nack"],
        "properties": {
            "id": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "string"},
            "address": {"type": "string"}, "connected": {"type": "boolean"}, "connected_at": {"type": "number"},
            "acked_state_version": {"type": ["integer", "null"],
                                    "description": "the routing version the node last applied"},
            "last_nack": {"oneOf": [{"type": "null"}, {
                "type": "object", "required": ["type_url", "version", "error", "at"],
                "properties": {"type_url": {"type": "string"}, "version": {"type": "string"},
                               "error": {"type": "string"}, "at": {"type": "number"}},
            }]},
        },
    },
    "CanarySpec": {
        "type": "object", "additionalProperties": False, "required": ["to"],
        "properties": {
            "to": {**_VERSION, "description": "the candidate version"},
            "shadow_first": {"type": "boolean", "default": False, "description": "mirror to the candidate first and gate on agreement"},
            "steps": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100}, "minItems": 1,
                      "default": [5, 10, 25, 50, 100], "description": "candidate weight percentages, strictly increasing"},
            "interval_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400, "default": 60},
            "max_error_ratio": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.01},
            "max_p99_ms": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None},
            "min_agreement": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.98},
            "drift": {"type": "boolean", "default": True, "description": "gate on the drift detector's verdicts (needs --drift-url)"},
            "min_requests": {"type": "integer", "minimum": 1, "default": 100, "description": "sample needed per phase"},
            "mirror_percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 100},
            "step_timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0,
                               "description": "a phase short of its sample fails after this (default ten intervals)"},
        },
    },
    "Canary": {
        "type": "object", "required": ["id", "model", "candidate", "state", "active", "spec", "history"],
        "properties": {
            "id": {"type": "string"}, "model": {"type": "string"}, "candidate": {"type": "string"},
            "baseline": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "weights before the canary"},
            "state": {"enum": ["shadow", "step", "promoted", "rolled_back", "aborted"]}, "active": {"type": "boolean"},
            "phase": {"type": "string"}, "step": {"type": ["integer", "null"]}, "weight": {"type": "number"},
            "spec": _ref("CanarySpec"), "started_at": {"type": "number"}, "phase_started_at": {"type": "number"},
            "finished_at": {"type": ["number", "null"]}, "reason": {"type": ["string", "null"]},
            "failed_gate": {"type": ["string", "null"]}, "route_version": {"type": "integer"},
            "measurement": {"type": ["object", "null"]}, "gates": {"type": "array", "items": {"type": "object"}},
            "history": {"type": "array", "items": {"type": "object"}},
        },
    },
    "CanaryList": {
        "type": "object", "required": ["canaries"],
        "properties": {"canaries": {"type": "array", "items": _ref("Canary")}},
    },
    "NodeList": {
        "type": "object", "required": ["nodes"],
        "properties": {"nodes": {"type": "array", "items": _ref("Node")}},
    },
}

_PATHS: dict = {
    "/v1/routes": {"get": {
        "summary": "every model's route", "operationId": "listRoutes",
        "responses": _responses("RouteList", "the routes"),
    }},
    "/v1/routes/{model}": {
        "parameters": [_MODEL],
        "get": {"summary": "one model's route", "operationId": "getRoute",
                "responses": _responses("RouteEntry", "the route", "404")},
        "put": {"summary": "create or replace a model's route (admin)", "operationId": "putRoute",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Route")}}},
                "responses": _responses("Applied", "the change was recorded and pushed", "400", "403")},
        "delete": {"summary": "remove a model's route (admin)", "operationId": "deleteRoute",
                   "responses": _responses("Deleted", "the route was removed", "403", "404")},
    },
    "/v1/routes/{model}/rollback": {"parameters": [_MODEL], "post": {
        "summary": "restore the route as it was before its latest change (admin)", "operationId": "rollbackRoute",
        "responses": _responses("Applied", "the earlier route was restored as a new change", "403", "404", "409"),
    }},
    "/v1/history": {"get": {
        "summary": "recorded changes, newest first", "operationId": "history",
        "parameters": [
            {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        ],
        "responses": _responses("History", "the changes", "400"),
    }},
    "/v1/nodes": {"get": {
        "summary": "sidecars and proxies known to the control plane, with what they applied",
        "operationId": "listNodes", "responses": _responses("NodeList", "the nodes"),
    }},
    "/v1/canaries": {"get": {
        "summary": "the latest canary of every model", "operationId": "listCanaries",
        "responses": _responses("CanaryList", "the canaries"),
    }},
    "/v1/canaries/{model}": {
        "parameters": [_MODEL],
        "get": {"summary": "the model's latest canary, running or finished", "operationId": "getCanary",
                "responses": _responses("Canary", "the canary", "404")},
        "post": {"summary": "start a canary (admin); it runs inside the control plane", "operationId": "startCanary",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CanarySpec")}}},
                 "responses": {"201" if code == "200" else code: value
                               for code, value in _responses("Canary", "the canary started", "400", "403", "404", "409").items()}},
    },
    "/v1/canaries/{model}/abort": {"parameters": [_MODEL], "post": {
        "summary": "stop the running canary and restore the route as before it (admin)", "operationId": "abortCanary",
        "responses": _responses("Canary", "the aborted canary", "403", "409"),
    }},
    "/healthz": {"get": {
        "summary": "liveness", "operationId": "health", "security": [],
        "responses": {"200": _json({"type": "object", "properties": {"ok": {"const": True}}}, "alive")},
    }},
    "/openapi.json": {"get": {
        "summary": "this document", "operationId": "openapi", "security": [],
        "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
    }},
}

_DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "sidemesh control plane admin API",
        "version": "1",
        "description": "Desired routing state per model: weighted backends, mirrors, timeouts and retries. "
        "Reads need any token from the token file; changes need an 'admin' token. "
        'Errors are {"error": "<what went wrong and what to do>"}.',
    },
    "servers": [{"url": "http://127.0.0.1:15000"}],
    "security": [{"bearer": []}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "a token from the control plane's token file"}},
    },
}


def openapi_document() -> dict:
    """A fresh copy, so a caller may change it without touching the served one."""
    return copy.deepcopy(_DOCUMENT)
