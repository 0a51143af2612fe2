"""The shared code path: a pod in, a JSON Patch out; applied, it gives a valid injected pod."""

from __future__ import annotations

import json

import pytest

from control_plane.errors import ValidationError
from control_plane.injector import InjectorConfig, apply_patch, plan_injection
from control_plane.injector.patch import ALREADY_INJECTED, INJECTED, NOT_OPTED_IN, pointer

from .pods import apply_json_patch, model_pod, plain_pod

CONFIG = InjectorConfig(image="registry.test/sidemesh:1.2.3")
CONTAINER_STYLE = InjectorConfig(image="registry.test/sidemesh:1.2.3", sidecar_style="container")


def inject(pod, config=CONFIG, namespace_enabled=False):
    injection = plan_injection(pod, config, namespace_enabled)
    assert injection.outcome == INJECTED
    patched = apply_json_patch(pod, list(injection.patch))
    assert apply_patch(pod, injection.patch) == patched  # the injector's own applier agrees with the RFC's
    return patched


def arg(container, flag):
    return container["args"][container["args"].index(flag) + 1]


def test_the_patch_adds_a_native_sidecar_a_volume_a_label_and_the_status():
    pod = model_pod(**{"sidemesh.io/port": "9000", "sidemesh.io/stats-sample": "0.1"})
    injected = inject(pod)
    (sidecar,) = injected["spec"]["initContainers"]
    assert sidecar["name"] == "sidemesh-proxy" and sidecar["restartPolicy"] == "Always"
    assert (arg(sidecar, "--model"), arg(sidecar, "--version")) == ("tabular", "1")
    assert arg(sidecar, "--upstream") == "http://127.0.0.1:9000"
    assert arg(sidecar, "--listen") == "0.0.0.0:15001" and arg(sidecar, "--admin") == "0.0.0.0:15020"
    assert arg(sidecar, "--advertise") == "$(POD_IP):15001"
    assert arg(sidecar, "--control-plane") == "sidemesh-control-plane.sidemesh-system.svc:15010"
    assert arg(sidecar, "--drift") == "sidemesh-drift.sidemesh-system.svc:9001"
    assert arg(sidecar, "--stats-sample") == "0.1"
    assert "--upstream-grpc" not in sidecar["args"]
    assert sidecar["env"] == [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    assert [(p["name"], p["containerPort"]) for p in sidecar["ports"]] == [("sidemesh-http", 15001), ("sidemesh-admin", 15020)]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "sidemesh-admin"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz/live", "port": "sidemesh-admin"}
    assert sidecar["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sidecar["volumeMounts"] == [{"name": "sidemesh-tmp", "mountPath": "/tmp"}]
    assert injected["spec"]["volumes"] == [{"name": "sidemesh-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    assert injected["metadata"]["labels"]["sidemesh.io/role"] == "primary"
    status = json.loads(injected["metadata"]["annotations"]["sidemesh.io/status"])
    assert status == {"container": "sidemesh-proxy", "image": "registry.test/sidemesh:1.2.3", "injector": status["injector"],
                      "native": True, "volumes": ["sidemesh-tmp"]}
    assert injected["spec"]["containers"] == pod["spec"]["containers"]


def test_the_status_annotation_key_is_escaped_in_the_pointer():
    ops = plan_injection(model_pod(), CONFIG).patch
    assert {"op": "add", "path": "/metadata/annotations/sidemesh.io~1status", "value": ops[0]["value"]} == ops[0]
    assert pointer("a~b", "c/d") == "/a~0b/c~1d"


def test_absent_maps_and_lists_are_added_whole():
    pod = plain_pod()
    pod["metadata"]["annotations"] = {"sidemesh.io/inject": "true", "sidemesh.io/model": "m", "sidemesh.io/version": "v"}
    paths = [op["path"] for op in plan_injection(pod, CONFIG).patch]
    assert paths == ["/metadata/annotations/sidemesh.io~1status", "/metadata/labels", "/spec/initContainers", "/spec/volumes"]
    assert inject(pod)["metadata"]["labels"] == {"sidemesh.io/role": "primary"}


def test_a_template_without_metadata_in_an_enabled_namespace_is_refused_for_want_of_a_model():
    with pytest.raises(ValidationError) as err:
        plan_injection({"spec": plain_pod()["spec"]}, CONFIG, namespace_enabled=True)
    assert err.value.field == "sidemesh.io/model"


def test_existing_lists_are_appended_to():
    pod = model_pod()
    pod["spec"]["initContainers"] = [{"name": "fetch-model", "image": "busybox"}]
    pod["spec"]["volumes"] = [{"name": "models", "emptyDir": {}}]
    injected = inject(pod)
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["fetch-model", "sidemesh-proxy"]
    assert [v["name"] for v in injected["spec"]["volumes"]] == ["models", "sidemesh-tmp"]


def test_a_second_pass_changes_nothing():
    injected = inject(model_pod())
    again = plan_injection(injected, CONFIG)
    assert again.outcome == ALREADY_INJECTED and again.patch == ()
    assert plan_injection(inject(model_pod(), CONTAINER_STYLE), CONTAINER_STYLE).patch == ()


def test_a_pod_that_did_not_opt_in_gets_no_patch_even_with_broken_annotations():
    pod = model_pod(**{"sidemesh.io/inject": "false", "sidemesh.io/port": "nonsense"})
    assert plan_injection(pod, CONFIG, namespace_enabled=True).outcome == NOT_OPTED_IN
    assert plan_injection(plain_pod(), CONFIG).patch == ()


def test_the_container_style_adds_an_ordinary_container():
    injected = inject(model_pod(), CONTAINER_STYLE)
    assert "initContainers" not in injected["spec"]
    assert injected["spec"]["containers"][-1]["name"] == "sidemesh-proxy"
    assert "restartPolicy" not in injected["spec"]["containers"][-1]


@pytest.mark.parametrize("restart_policy", ["Never", "OnFailure"])
def test_pods_that_run_to_completion_always_get_the_native_sidecar(restart_policy):
    pod = model_pod()
    pod["spec"]["restartPolicy"] = restart_policy
    injected = inject(pod, CONTAINER_STYLE)
    assert injected["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in injected["spec"]["containers"]] == ["model"]


def test_a_grpc_port_adds_the_grpc_proxy_and_port():
    sidecar = inject(model_pod(**{"sidemesh.io/grpc-port": "8001"}))["spec"]["initContainers"][0]
    assert arg(sidecar, "--upstream-grpc") == "127.0.0.1:8001"
    assert arg(sidecar, "--grpc-listen") == "0.0.0.0:15002" and arg(sidecar, "--advertise-grpc") == "$(POD_IP):15002"
    assert ("sidemesh-grpc", 15002) in [(p["name"], p["containerPort"]) for p in sidecar["ports"]]


def test_a_shadow_is_labelled_so_the_service_does_not_select_it():
    injected = inject(model_pod(**{"sidemesh.io/shadow": "true"}))
    assert injected["metadata"]["labels"]["sidemesh.io/role"] == "shadow"


def test_without_control_plane_or_drift_the_flags_are_left_out():
    config = InjectorConfig(control_plane="", drift="")
    args = inject(model_pod(**{"sidemesh.io/stats-sample": "0.5"}), config)["spec"]["initContainers"][0]["args"]
    assert "--control-plane" not in args and "--drift" not in args and "--stats-sample" not in args


def test_resource_annotations_reach_the_container():
    pod = model_pod(**{"sidemesh.io/cpu-limit": "2", "sidemesh.io/memory-request": "256Mi"})
    resources = inject(pod)["spec"]["initContainers"][0]["resources"]
    assert resources == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}}


def test_a_pod_with_the_status_but_no_sidecar_is_injected_again():
    injected = inject(model_pod())
    injected["spec"]["initContainers"] = []
    again = inject(injected)
    assert [c["name"] for c in again["spec"]["initContainers"]] == ["sidemesh-proxy"]
    assert [v["name"] for v in again["spec"]["volumes"]] == ["sidemesh-tmp"]


def _with(pod, path, value):
    target = pod
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return pod


@pytest.mark.parametrize("change, field, expected", [
    (("spec", "hostNetwork", True), "spec.hostNetwork", "without hostNetwork"),
    (("spec", "containers", 0, "ports", 0, "containerPort", 15020), "spec.containers[0].ports", "the sidecar's"),
    (("spec", "containers", 0, "ports", 0, "name", "sidemesh-http"), "spec.containers[0].ports", "the sidecar's"),
    (("spec", "containers", 0, "name", "sidemesh-proxy"), "spec.containers[0].name", "another container name"),
    (("spec", "volumes", [{"name": "sidemesh-tmp", "emptyDir": {}}]), "spec.volumes", "another volume name"),
    (("metadata", "labels", "sidemesh.io/role", "shadow"), "sidemesh.io/role", "expected no sidemesh.io/role label"),
    (("spec", "containers", []), "spec.containers", "at least one container"),
    (("spec", "containers", "model"), "spec.containers", "a list of objects"),
])
def test_a_pod_the_sidecar_cannot_join_is_refused_with_the_field_at_fault(change, field, expected):
    pod = _with(model_pod(), change[:-1], change[-1])
    with pytest.raises(ValidationError) as err:
        plan_injection(pod, CONFIG)
    assert err.value.field == field and expected in str(err.value)
