"""Strict schema validation of rendered Kubernetes documents.

Built-in kinds go through ``kubernetes_validate.validate(doc, version, strict=True)`` (the
Python API of ``kubernetes-validate --strict``: unknown fields are errors) for every
Kubernetes version from 1.29 to the newest that kubernetes-validate ships.

kubernetes-validate has no schemas for custom resources (it raises ``SchemaNotFoundError``,
which its command line only warns about). Those are checked against their CRDs' schemas
from PyPI: the cloudcoil model packages are generated from the CRDs' OpenAPI schemas
(cert-manager 1.17, prometheus-operator 0.80), and pydantic turns each model back into a
JSON Schema. As in ``--strict``, objects that declare properties are closed (an unknown
field is an error, as the API server's strict field validation makes it); maps stay open.
What the round trip cannot carry (CEL rules, formats) is not checked.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
from packaging.version import Version

__all__ = ["FIRST_VERSION", "kubernetes_versions", "CUSTOM_RESOURCE_PACKAGES", "is_builtin", "validate_builtin",
           "validate_custom", "validation_errors"]

FIRST_VERSION = "1.29"
# API group -> the cloudcoil package holding its models, one module per API version.
CUSTOM_RESOURCE_PACKAGES = {
    "cert-manager.io": "cloudcoil.models.cert_manager",
    "acme.cert-manager.io": "cloudcoil.models.cert_manager.acme",
    "monitoring.coreos.com": "cloudcoil.models.prometheus_operator",
}


def kubernetes_versions(first: str = FIRST_VERSION) -> list[str]:
    """``first`` through the newest minor version kubernetes-validate has schemas for."""
    newest = Version(kubernetes_validate.latest_version())
    start = Version(first)
    if start.major != newest.major or start > newest:
        raise AssertionError(f"kubernetes-validate {kubernetes_validate.__version__} ships schemas up to {newest}, "
                             f"expected at least {first}")
    return [f"{newest.major}.{minor}" for minor in range(start.minor, newest.minor + 1)]


def _where(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '')}".replace(" /", " ")


@cache
def is_builtin(api_version: str, kind: str) -> bool:
    try:
        kubernetes_validate.validate({"apiVersion": api_version, "kind": kind}, kubernetes_versions()[-1], strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        pass
    return True


def validate_builtin(doc: dict, version: str) -> str | None:
    """The first strict-schema error of a built-in kind's ``doc`` at ``version``, or None."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(document)"
        return f"{_where(doc)}: Kubernetes {version}: {path}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError:
        return f"{_where(doc)}: Kubernetes {version} has no {doc['apiVersion']} {doc['kind']}"
    return None


def _python_pattern(pattern: str) -> str:
    """CRD patterns are Go (RE2) syntax; Python wants an inline ``(?i)`` first."""
    try:
        re.compile(pattern)
        return pattern
    except re.error:
        if "(?i)" in pattern:
            return "(?i)" + pattern.replace("(?i)", "", 1)
        raise


def _strict(node: Any) -> Any:
    """Close every object that lists properties; drop pydantic's ``Optional`` (``anyOf``
    with null: an absent field is what a manifest leaves out), which also makes errors
    name the field at fault; fix patterns for Python."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    options = node.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        rest = {key: value for key, value in node.items() if key != "anyOf"}
        node = {**rest, **next(option for option in options if option != {"type": "null"})}
    out = {key: _strict(value) for key, value in node.items()}
    if out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if isinstance(out.get("pattern"), str):
        out["pattern"] = _python_pattern(out["pattern"])
    return out


@cache
def _custom_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    group, _, version = api_version.rpartition("/")
    package = CUSTOM_RESOURCE_PACKAGES.get(group)
    if package is None:
        raise AssertionError(f"no schema for the custom resource {api_version} {kind}: add its group to "
                             "CUSTOM_RESOURCE_PACKAGES (tests/manifests/schemas.py) with a package of its CRD's models")
    module = importlib.import_module(f"{package}.{version}")
    model = getattr(module, kind, None)
    if model is None:
        raise AssertionError(f"{package}.{version} has no model {kind}: is {api_version} {kind} a real kind?")
    schema = _strict(model.model_json_schema(by_alias=True))
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_custom(doc: dict) -> list[str]:
    """Every error of a custom resource against its CRD's schema (strict)."""
    validator = _custom_validator(doc["apiVersion"], doc["kind"])
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    return [f"{_where(doc)}: {'.'.join(map(str, e.path)) or '(document)'}: {e.message}" for e in errors]


def validation_errors(doc: dict, versions: list[str]) -> list[str]:
    """All errors of one rendered document: built-ins at each version, custom resources once."""
    if not isinstance(doc, dict) or not isinstance(doc.get("apiVersion"), str) or not isinstance(doc.get("kind"), str):
        return [f"not a Kubernetes object (apiVersion and kind are missing): {str(doc)[:200]}"]
    if not is_builtin(doc["apiVersion"], doc["kind"]):
        return validate_custom(doc)
    return [error for version in versions if (error := validate_builtin(doc, version)) is not None]
