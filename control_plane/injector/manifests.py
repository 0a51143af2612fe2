"""``sidemesh inject``: the webhook's patch applied to every pod template in a YAML stream.

Pods, and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets,
ReplicationControllers, Jobs, CronJobs and PodTemplates (also inside a ``v1 List``), go
through ``plan_injection`` exactly as the webhook's pods do; every other document comes out
as it went in (as data: YAML comments and formatting are not kept). Key order is kept, so
a second pass over the output is byte-identical.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ValidationError
from .config import InjectorConfig
from .patch import apply_patch, plan_injection

__all__ = ["InjectSummary", "TEMPLATE_PATHS", "inject_documents", "inject_yaml"]

# (apiVersion, kind) -> where its pod template is (the document itself for a Pod).
TEMPLATE_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("v1", "Pod"): (),
    ("v1", "ReplicationController"): ("spec", "template"),
    ("v1", "PodTemplate"): ("template",),
    ("apps/v1", "Deployment"): ("spec", "template"),
    ("apps/v1", "StatefulSet"): ("spec", "template"),
    ("apps/v1", "DaemonSet"): ("spec", "template"),
    ("apps/v1", "ReplicaSet"): ("spec", "template"),
    ("batch/v1", "Job"): ("spec", "template"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class InjectSummary:
    outcomes: Counter  # injected / already_injected / not_opted_in per pod template
    other: int  # documents without a pod template, left as they were

    def __str__(self) -> str:
        parts = [f"{self.outcomes[k]} {k.replace('_', ' ')}" for k in ("injected", "already_injected", "not_opted_in")]
        return f"pod templates: {', '.join(parts)}; {self.other} other document(s) unchanged"


def _describe(doc: dict, index: str) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = "/".join(str(p) for p in (meta.get("namespace"), meta.get("name")) if p)
    return f"document {index} ({doc.get('kind')}{' ' + name if name else ''})"


def _inject(doc: Any, index: str, config: InjectorConfig, namespace_enabled: bool, outcomes: Counter) -> tuple[Any, bool]:
    """``doc`` with its pod template injected; the flag tells whether it had a template."""
    if not isinstance(doc, dict):
        return doc, False
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key == ("v1", "List") and isinstance(doc.get("items"), list):
        items, found = [], False
        for i, item in enumerate(doc["items"]):
            item, had = _inject(item, f"{index} items[{i}]", config, namespace_enabled, outcomes)
            items.append(item)
            found |= had
        return {**doc, "items": items}, found
    path = TEMPLATE_PATHS.get(key)
    if path is None:
        return doc, False
    template: Any = doc
    for step in path:
        template = template.get(step) if isinstance(template, dict) else None
    where = f"{_describe(doc, index)}{', ' + '.'.join(path) if path else ''}"
    if not isinstance(template, dict):
        raise ValidationError(where, "expected a pod template (metadata and spec)")
    try:
        injection = plan_injection(template, config, namespace_enabled)
    except ValidationError as exc:
        raise ValidationError(where, str(exc)) from None
    outcomes[injection.outcome] += 1
    if not injection.patch:
        return doc, True
    prefix = "".join(f"/{step}" for step in path)  # the template path's keys need no escaping
    return apply_patch(doc, [{**op, "path": prefix + op["path"]} for op in injection.patch]), True


def inject_documents(docs: list, config: InjectorConfig, namespace_enabled: bool = False) -> tuple[list, InjectSummary]:
    outcomes: Counter = Counter()
    out, other = [], 0
    for n, doc in enumerate(docs, 1):
        doc, had = _inject(doc, str(n), config, namespace_enabled, outcomes)
        out.append(doc)
        other += not had
    return out, InjectSummary(outcomes, other)


def inject_yaml(text: str, config: InjectorConfig, namespace_enabled: bool = False) -> tuple[str, InjectSummary]:
    """Inject a multi-document YAML stream; empty documents are dropped."""
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ValidationError("yaml", f"expected Kubernetes manifests as YAML: {exc}") from None
    docs, summary = inject_documents(docs, config, namespace_enabled)
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, default_flow_style=False), summary
