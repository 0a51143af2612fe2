"""Pods and AdmissionReviews as the API server sends them, and an RFC 6902 applier written
from the RFC (not the injector's), so the injector's patches are checked independently."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

__all__ = ["model_pod", "plain_pod", "admission_review", "decode_patch", "apply_json_patch"]


def model_pod(**annotations: str) -> dict:
    """A model server pod as the API server has it at admission (generateName, no name)."""
    base = {"sidemesh.io/inject": "true", "sidemesh.io/model": "tabular", "sidemesh.io/version": "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "tabular-v1-7d9f8-", "namespace": "models", "labels": {"app": "tabular"},
                     "annotations": {**base, **annotations}},
        "spec": {"containers": [{"name": "model", "image": "ghcr.io/sidemesh/sidemesh:0.1.0", "args": ["model-server"],
                                 "ports": [{"name": "http", "containerPort": 8000}]}],
                 "restartPolicy": "Always"},
    }


def plain_pod(**labels: str) -> dict:
    """A pod with no annotations at all (``metadata.annotations`` absent)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "plain", "namespace": "models", **({"labels": labels} if labels else {})},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}}


def admission_review(pod: Any, *, dry_run: bool = False, operation: str = "CREATE", uid: str | None = None) -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "models",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def decode_patch(response: dict) -> list[dict]:
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def _tokens(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _walk(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def apply_json_patch(doc: Any, patch: list[dict]) -> Any:
    """RFC 6902 add, remove, replace and test; any failure raises."""
    doc = copy.deepcopy(doc)
    for op in patch:
        tokens = _tokens(op["path"])
        parent, last = _walk(doc, tokens[:-1]), tokens[-1]
        if op["op"] == "add":
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                assert 0 <= index <= len(parent), f"{op['path']}: index out of range"
                parent.insert(index, copy.deepcopy(op["value"]))
            else:
                assert isinstance(parent, dict), f"{op['path']}: parent is not an object"
                parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "replace":
            key = int(last) if isinstance(parent, list) else last
            assert isinstance(parent, list) or key in parent, f"{op['path']}: nothing to replace"
            parent[key] = copy.deepcopy(op["value"])
        elif op["op"] == "test":
            assert _walk(doc, tokens) == op["value"], f"{op['path']}: test failed"
        else:
            raise AssertionError(f"unexpected op {op['op']!r}")
    return doc
