"""``sidemesh inject`` on multi-document YAML: every pod template gets the webhook's own
patch, everything else comes out as it went in, and a second pass is byte-identical."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from control_plane.injector import InjectorConfig, plan_injection

from .pods import apply_json_patch

ANNOTATED = {"sidemesh.io/inject": "true", "sidemesh.io/model": "tabular", "sidemesh.io/version": "1"}


def template(annotations=None, restart_policy=None):
    spec = {"containers": [{"name": "model", "image": "ghcr.io/sidemesh/sidemesh:0.1.0", "ports": [{"containerPort": 8000}]}]}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    meta = {"labels": {"app": "tabular"}}
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    return {"metadata": meta, "spec": spec}


def workload(api, kind, name, tmpl, **spec):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "models"},
            "spec": {"selector": {"matchLabels": {"app": "tabular"}}, **spec, "template": tmpl}}


# (document, where its pod template is, or None when it has none)
DOCS = [
    (workload("apps/v1", "Deployment", "tabular-v1", template(ANNOTATED), replicas=2), ("spec", "template")),
    ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "tabular", "namespace": "models"},
      "spec": {"selector": {"app": "tabular", "sidemesh.io/role": "primary"},
               "ports": [{"name": "http", "port": 80, "targetPort": "sidemesh-http"}]}}, None),
    (workload("apps/v1", "StatefulSet", "tabular-v2", template({**ANNOTATED, "sidemesh.io/version": "2"}), serviceName="tabular"),
     ("spec", "template")),
    ({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backfill"},
      "spec": {"template": template(ANNOTATED, "Never")}}, ("spec", "template")),
    ({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
      "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template(ANNOTATED, "OnFailure")}}}},
     ("spec", "jobTemplate", "spec", "template")),
    (workload("apps/v1", "DaemonSet", "edge", template(ANNOTATED)), ("spec", "template")),
    (workload("apps/v1", "ReplicaSet", "rs", template(ANNOTATED)), ("spec", "template")),
    ({"apiVersion": "v1", "kind": "Pod", **template({**ANNOTATED, "sidemesh.io/shadow": "true"}),
      "metadata": {"name": "bare", "annotations": {**ANNOTATED, "sidemesh.io/shadow": "true"}}}, ()),
    (workload("apps/v1", "Deployment", "not-opted-in", template()), ("spec", "template")),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"on": "yes", "port": "8000"}}, None),
    ({"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "not-apps"},
      "spec": {"template": template(ANNOTATED)}}, None),
]


def run_inject(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sidemesh", "inject", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def expected(doc, path, config=None):
    """The document with the patch the webhook would answer for its pod template."""
    patch = plan_injection(get(doc, path), config or InjectorConfig()).patch
    prefix = "".join(f"/{key}" for key in path)
    return apply_json_patch(doc, [{**op, "path": prefix + op["path"]} for op in patch])


@pytest.fixture(scope="module")
def manifest() -> str:
    return "# a comment, which does not survive\n" + yaml.safe_dump_all([doc for doc, _ in DOCS], sort_keys=False)


@pytest.fixture(scope="module")
def injected(manifest) -> subprocess.CompletedProcess:
    return run_inject("-f", "-", stdin=manifest)


def test_every_pod_template_gets_the_webhooks_patch_and_other_documents_are_untouched(injected):
    assert injected.returncode == 0, injected.stderr
    out = list(yaml.safe_load_all(injected.stdout))
    assert len(out) == len(DOCS)
    for (doc, path), result in zip(DOCS, out, strict=True):
        if path is None:
            assert result == doc
        else:
            assert result == expected(doc, path), doc["metadata"]["name"]
    assert "pod templates: 7 injected, 0 already injected, 1 not opted in; 3 other document(s) unchanged" in injected.stderr


def test_the_sidecar_lands_where_each_kind_needs_it(injected):
    out = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(injected.stdout)}
    names = lambda spec, key: [c["name"] for c in spec.get(key, [])]
    for name, path in (("tabular-v1", ("spec", "template")), ("backfill", ("spec", "template")),
                       ("nightly", ("spec", "jobTemplate", "spec", "template")), ("bare", ())):
        spec = get(out[name], path)["spec"]
        assert names(spec, "initContainers") == ["sidemesh-proxy"], name  # native: a Job can complete
        assert names(spec, "containers") == ["model"], name
    assert get(out["bare"], ())["metadata"]["labels"]["sidemesh.io/role"] == "shadow"
    assert out["not-opted-in"] == DOCS[8][0]


def test_a_second_pass_is_byte_identical(injected):
    again = run_inject("-f", "-", stdin=injected.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout == injected.stdout
    assert "0 injected, 7 already injected" in again.stderr


def test_container_style_output_is_stable_too(manifest):
    first = run_inject("-f", "-", "--sidecar-style", "container", stdin=manifest)
    second = run_inject("-f", "-", "--sidecar-style", "container", stdin=first.stdout)
    assert first.returncode == second.returncode == 0 and first.stdout == second.stdout
    deployment = next(yaml.safe_load_all(first.stdout))
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["model", "sidemesh-proxy"]


def test_files_in_and_out_and_a_list(tmp_path):
    source, target = tmp_path / "in.yaml", tmp_path / "out.yaml"
    items = [DOCS[0][0], DOCS[1][0]]
    source.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False))
    done = run_inject("-f", str(source), "-o", str(target), "--image", "registry.test/sidemesh:2")
    assert done.returncode == 0 and done.stdout == "", done.stderr
    out = yaml.safe_load(target.read_text())
    assert out["items"][0] == expected(items[0], ("spec", "template"), InjectorConfig(image="registry.test/sidemesh:2"))
    assert out["items"][1] == items[1]


def test_namespace_enabled_injects_pods_without_the_annotation():
    doc = workload("apps/v1", "Deployment", "labelled", {
        "metadata": {"labels": {"app.kubernetes.io/name": "tabular", "app.kubernetes.io/version": "4"}},
        "spec": {"containers": [{"name": "model", "image": "m"}]}})
    text = yaml.safe_dump(doc, sort_keys=False)
    assert yaml.safe_load(run_inject("-f", "-", stdin=text).stdout) == doc
    out = yaml.safe_load(run_inject("-f", "-", "--namespace-enabled", stdin=text).stdout)
    sidecar = out["spec"]["template"]["spec"]["initContainers"][0]
    assert sidecar["args"][:4] == ["--model", "tabular", "--version", "4"]


def test_a_broken_annotation_fails_the_whole_run_naming_the_document_and_the_annotation():
    docs = [DOCS[1][0], workload("apps/v1", "StatefulSet", "broken", template({**ANNOTATED, "sidemesh.io/port": "web"}))]
    done = run_inject("-f", "-", stdin=yaml.safe_dump_all(docs, sort_keys=False))
    assert done.returncode == 1 and done.stdout == ""
    assert "document 2 (StatefulSet models/broken), spec.template: sidemesh.io/port: " in done.stderr
    assert 'e.g. "8000"' in done.stderr


def test_an_unquoted_annotation_value_is_called_out():
    text = yaml.safe_dump(DOCS[0][0], sort_keys=False).replace("sidemesh.io/version: '1'", "sidemesh.io/version: 1")
    done = run_inject("-f", "-", stdin=text)
    assert done.returncode == 1 and "sidemesh.io/version: " in done.stderr and "quote it in YAML" in done.stderr


def test_bad_input_and_flags_are_clear_errors(tmp_path):
    done = run_inject("-f", "-", stdin="a: [unclosed\n")
    assert done.returncode == 1 and "expected Kubernetes manifests as YAML" in done.stderr
    done = run_inject("-f", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "cannot read" in done.stderr
    done = run_inject("-f", "-", "--memory-limit", "lots", stdin="")
    assert done.returncode == 2 and "--memory-limit: expected a Kubernetes quantity" in done.stderr
    done = run_inject("-f", "-", "--control-plane", "no-port", stdin="")
    assert done.returncode == 2 and "--control-plane: expected HOST:PORT" in done.stderr
    done = run_inject("-f", "-", "--image", "Not An Image", stdin="")
    assert done.returncode == 2 and "--image: expected an image reference" in done.stderr
