"""Pods and AdmissionReviews for the sidecar injector: annotation values drawn from what
people write (``"true"``, ``8000`` unquoted, ``250m``, typos), containers, ports, volumes and
pod settings that collide with the sidecar's, for the webhook's whole decision path."""

from __future__ import annotations

from hypothesis import strategies as st

from control_plane.injector.annotations import ANNOTATIONS, INJECT, MODEL, ROLE_LABEL, STATUS, VERSION
from tests.control_plane.injector.pods import admission_review

__all__ = ["pods", "reviews"]

_VALUES = st.sampled_from([
    "true", "false", "True", "yes", "8000", "9000", "15001", "15020", "0", "65535", "65536", "0.1", "1", "1.5", "nan",
    "inf", "250m", "1Gi", "0.5Ei", "1e3", "1e40", "-1", "", "tabular", "v1", "a b", "٣", "9" * 5000,
]) | st.text(max_size=8) | st.integers(0, 70000) | st.booleans()
_NAMES = st.sampled_from(["model", "app", "sidemesh-proxy", "sidemesh-tmp", ""]) | st.text(max_size=6)
_PORT = st.fixed_dictionaries({}, optional={"name": _NAMES | st.sampled_from(["sidemesh-http", "http"]),
                                            "containerPort": st.sampled_from([8000, 15001, 15020]) | st.integers(0, 70000)})
_CONTAINER = st.fixed_dictionaries({"name": _NAMES}, optional={"image": st.just("busybox"), "ports": st.lists(_PORT, max_size=2)})


@st.composite
def pods(draw, opted_in: bool | None = None) -> dict:
    annotations = draw(st.dictionaries(st.sampled_from([k for k in ANNOTATIONS if k != INJECT]) | st.sampled_from(
        ["sidemesh.io/modle", "other.io/x", "sidemesh.io/"]), _VALUES, max_size=4))
    inject = draw(st.sampled_from(["true", "false"]) | _VALUES) if opted_in is None else ("true" if opted_in else "false")
    annotations[INJECT] = inject
    if opted_in:
        annotations.setdefault(MODEL, draw(st.sampled_from(["tabular", "m-1"])))
        annotations.setdefault(VERSION, draw(st.sampled_from(["1", "v2"])))
        annotations.pop(STATUS, None)
    metadata: dict = {"generateName": "p-", "namespace": "models", "annotations": annotations}
    if draw(st.booleans()):
        metadata["labels"] = draw(st.dictionaries(st.sampled_from([ROLE_LABEL, "app.kubernetes.io/name", "app"]),
                                                  st.sampled_from(["primary", "shadow", "x"]), max_size=2))
    spec: dict = {"containers": draw(st.lists(_CONTAINER, min_size=1, max_size=2))}
    optional = st.fixed_dictionaries({}, optional={
        "initContainers": st.lists(_CONTAINER, max_size=1), "volumes": st.lists(st.fixed_dictionaries({"name": _NAMES}), max_size=2),
        "restartPolicy": st.sampled_from(["Always", "Never", "OnFailure"]), "hostNetwork": st.booleans()})
    spec.update(draw(optional))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@st.composite
def reviews(draw, opted_in: bool | None = None) -> dict:
    return admission_review(draw(pods(opted_in)), dry_run=draw(st.booleans()),
                            operation=draw(st.sampled_from(["CREATE", "CREATE", "UPDATE", "DELETE"])), uid="u-1")
