"""manifests/monitoring renders with kustomize into what a Prometheus Operator and Grafana's
dashboard sidecar pick up, and its selectors meet what the rest of the repository deploys:
the Services of manifests/base, the injector's pod label and port names, the example model
servers' port name."""

from __future__ import annotations

import json
from functools import cache

import yaml

from control_plane.injector.annotations import ROLE_LABEL, SIDECAR_PORTS
from tests.manifests.render import documents, render
from tools.monitoring.generate import MONITORING

ROOT = MONITORING.parents[1]


@cache
def _rendered() -> tuple[dict, ...]:
    return tuple(documents(render(MONITORING)))  # kubectl kustomize, or kustomize build


def rendered() -> list[dict]:
    return [json.loads(json.dumps(d)) for d in _rendered()]  # a copy per test


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _manifests(*parts: str) -> list[dict]:
    return [d for path in sorted(ROOT.joinpath("manifests", *parts).rglob("*.yaml"))
            for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and "kind" in d]


def test_everything_lands_in_sidemesh_system():
    docs = rendered()
    assert {d["kind"] for d in docs} == {"ConfigMap", "PodMonitor", "ServiceMonitor", "PrometheusRule"}
    assert {d["metadata"]["namespace"] for d in docs} == {"sidemesh-system"}


def test_each_dashboard_is_a_configmap_labelled_for_grafana_with_a_stable_name():
    maps = _by_kind(rendered(), "ConfigMap")
    assert set(maps) == {"sidemesh-dashboard-latency", "sidemesh-dashboard-drift"}
    for name, cm in maps.items():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key, text), = cm["data"].items()
        assert key == f"sidemesh-{name.rsplit('-', 1)[1]}.json"
        assert json.loads(text) == json.loads((MONITORING / "dashboards" / f"{name.rsplit('-', 1)[1]}.json").read_text())


def test_the_prometheus_rule_is_rules_yaml():
    rule, = _by_kind(rendered(), "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((MONITORING / "rules.yaml").read_text())


def test_the_pod_monitors_find_injected_pods_in_every_namespace_on_the_right_ports():
    monitors = _by_kind(rendered(), "PodMonitor")
    assert set(monitors) == {"sidemesh-sidecars", "sidemesh-model-servers"}
    for monitor in monitors.values():
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"any": True}
        assert spec["selector"]["matchExpressions"] == [{"key": ROLE_LABEL, "operator": "In", "values": ["primary", "shadow"]}]
    sidecar_port, = monitors["sidemesh-sidecars"]["spec"]["podMetricsEndpoints"]
    assert sidecar_port["port"] in SIDECAR_PORTS and SIDECAR_PORTS[sidecar_port["port"]] == 15020
    server_port, = monitors["sidemesh-model-servers"]["spec"]["podMetricsEndpoints"]
    # the example models name their model server's REST port so
    deployments = [d for d in _manifests("examples") if d["kind"] == "Deployment"]
    assert deployments, "manifests/examples has no Deployment to check the port name against"
    for deployment in deployments:
        server = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "model-server")
        assert {"name": server_port["port"], "containerPort": 8000, "protocol": "TCP"} in server["ports"]


def test_the_service_monitors_select_the_base_services_by_label_and_port_name():
    services = {d["metadata"]["name"]: d for d in _manifests("base") if d["kind"] == "Service"}
    expected = {"sidemesh-control-plane": 15000, "sidemesh-drift": 9000}
    monitors = _by_kind(rendered(), "ServiceMonitor")
    assert set(monitors) == set(expected)
    for name, port_number in expected.items():
        service = services[name]
        selector = monitors[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        endpoint, = monitors[name]["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert {"name": endpoint["port"], "port": port_number} in [{"name": p["name"], "port": p["port"]} for p in service["spec"]["ports"]]
