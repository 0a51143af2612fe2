"""Kubernetes label selectors, evaluated as the API server does, to check which namespaces
and pods a webhook or a Service selects."""

from __future__ import annotations

__all__ = ["matches"]


def matches(selector: dict, labels: dict) -> bool:
    """Whether ``labels`` satisfy ``selector`` (``matchLabels`` and ``matchExpressions``)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            ok = labels.get(key) in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"operator: expected In, NotIn, Exists or DoesNotExist, got {op!r}")
        if not ok:
            return False
    return True
