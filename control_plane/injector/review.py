"""AdmissionReview v1 in, AdmissionReview v1 out: the webhook's decision, free of HTTP.

A malformed review raises ``ValidationError`` (the server answers 400); a pod that opted in
with broken annotations is a denial (``allowed: false``, code 400, the message naming the
annotation). Dry-run reviews get the same answer as real ones (the API server shows the
mutated pod); only the caller's bookkeeping tells them apart.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from .config import InjectorConfig
from .patch import plan_injection

__all__ = ["ReviewResult", "DENIED", "IGNORED", "review"]

API_VERSION = "admission.k8s.io/v1"
DENIED, IGNORED = "denied", "ignored"  # besides patch's INJECTED, ALREADY_INJECTED, NOT_OPTED_IN


@dataclass(frozen=True)
class ReviewResult:
    response: dict  # the AdmissionReview to send back
    outcome: str  # injected, already_injected, not_opted_in, denied or ignored
    dry_run: bool
    pod: str  # namespace/name (or generateName) for logs
    message: str = ""  # why, when denied


def _parse(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested past the interpreter's limit
        raise ValidationError("body", f"expected an AdmissionReview JSON document, got invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValidationError("body", "expected an AdmissionReview JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise ValidationError("apiVersion", f"expected apiVersion {API_VERSION} and kind AdmissionReview (admissionReviewVersions: "
                              f"[\"v1\"]), got {doc.get('apiVersion')!r} {doc.get('kind')!r}")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise ValidationError("request", "expected the admission request object")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise ValidationError("request.uid", "expected the request's uid, a non-empty string")
    if not isinstance(request.get("dryRun", False), bool):
        raise ValidationError("request.dryRun", f"expected true or false, got {request.get('dryRun')!r}")
    return request


def _pod_name(request: dict, obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    name = request.get("name") or meta.get("name") or f"{meta.get('generateName', '')}*"
    return f"{request.get('namespace') or meta.get('namespace') or ''}/{name}"


def _answer(uid: str, allowed: bool, **fields: Any) -> dict:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": allowed, **fields}}


def review(body: bytes, config: InjectorConfig, namespace_enabled: bool) -> ReviewResult:
    """Decide on one AdmissionReview. Only Pod CREATE is mutated; anything else the
    webhook is sent (an UPDATE, another kind, a subresource) is allowed unchanged."""
    request = _parse(body)
    uid, dry_run = request["uid"], request.get("dryRun", False)
    obj = request.get("object")
    pod = _pod_name(request, obj)
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    if request.get("operation") != "CREATE" or kind.get("kind", "Pod") != "Pod" or request.get("subResource"):
        return ReviewResult(_answer(uid, True), IGNORED, dry_run, pod)
    if not isinstance(obj, dict):
        raise ValidationError("request.object", "expected the pod being created")
    try:
        injection = plan_injection(obj, config, namespace_enabled)
    except ValidationError as exc:
        message = f"sidemesh injector: {exc}"
        status = {"status": "Failure", "code": 400, "reason": "BadRequest", "message": message}
        return ReviewResult(_answer(uid, False, status=status), DENIED, dry_run, pod, message)
    if not injection.patch:
        return ReviewResult(_answer(uid, True), injection.outcome, dry_run, pod)
    patch = base64.b64encode(json.dumps(injection.patch, separators=(",", ":")).encode()).decode()
    return ReviewResult(_answer(uid, True, patchType="JSONPatch", patch=patch), injection.outcome, dry_run, pod)
