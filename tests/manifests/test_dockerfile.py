"""The Dockerfile, checked as far as a machine without a Docker engine can: it parses, its
base image is pinned and has a Python the project accepts, every COPY source exists and
survives .dockerignore, the files it copies build a wheel with every package and the
`sidemesh` console script, and the image it ends in runs `sidemesh` as the same non-root
user the manifests and the injected sidecars run as."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from setuptools import find_packages

from control_plane.injector.config import InjectorConfig

from .dockerfile import DockerIgnore, parse_dockerfile
from .render import ROOT, rendered_all

DOCKERFILE = parse_dockerfile(ROOT / "Dockerfile")
IGNORE = DockerIgnore((ROOT / ".dockerignore").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUILD, FINAL = DOCKERFILE.stages[0], DOCKERFILE.stages[-1]


def _context_files(source: str) -> list[Path]:
    """The files of a COPY source that reach the build context."""
    path = ROOT / source
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return [f for f in files if not IGNORE.excluded(f.relative_to(ROOT).as_posix())]


def _workdir(stage, before_line: int) -> str:
    workdirs = [i.value for i in stage.all("WORKDIR") if i.line < before_line]
    return workdirs[-1] if workdirs else "/"


def test_it_uses_the_stable_dockerfile_syntax():
    assert DOCKERFILE.directives.get("syntax") == "docker/dockerfile:1"


def test_the_base_images_are_pinned_and_run_a_python_the_project_accepts():
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for stage in DOCKERFILE.stages:
        name, _, tag = stage.image.partition(":")
        assert name == "python" and tag and tag != "latest", stage.image
        assert tag.split("-")[0] in requires, f"{stage.image} does not satisfy requires-python {requires}"


def test_every_copy_source_exists_and_is_not_ignored():
    stages = [s.name for s in DOCKERFILE.stages]
    for number, stage in enumerate(DOCKERFILE.stages):
        for copy in stage.all("COPY") + stage.all("ADD"):
            flags, sources, _ = copy.copy_parts()
            if "from" in flags:
                assert flags["from"] in stages[:number], f"line {copy.line}: --from={flags['from']} is not an earlier stage"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"line {copy.line}: {source} does not exist"
                assert _context_files(source), f"line {copy.line}: .dockerignore leaves nothing of {source}"


def test_dockerignore_keeps_out_what_the_image_must_not_hold():
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "sidecar/__pycache__/proxy.cpython-311.pyc",
                 "sidemesh.egg-info/PKG-INFO", ".sidemesh/control-plane.db", "manifests/base/kustomization.yaml"):
        assert IGNORE.excluded(path), path
    for path in ("pyproject.toml", "README.md", "sidemesh/cli.py", "control_plane/injector/server.py"):
        assert not IGNORE.excluded(path), path


def test_the_build_stage_installs_what_it_copied():
    install = next(r for r in BUILD.all("RUN") if "pip install ." in r.value)
    copies = [c for c in BUILD.all("COPY") if "from" not in c.copy_parts()[0]]
    assert copies and all(c.line < install.line for c in copies)
    assert _workdir(BUILD, copies[0].line) == _workdir(BUILD, install.line) == "/src"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from exactly what the build stage copies into its WORKDIR."""
    context = tmp_path_factory.mktemp("context")
    for copy in BUILD.all("COPY"):
        _, sources, destination = copy.copy_parts()
        target = context / destination
        for source in sources:
            for file in _context_files(source):
                relative = file.relative_to(ROOT / source) if (ROOT / source).is_dir() else Path(file.name)
                place = target / relative if (ROOT / source).is_dir() or destination.endswith("/") else target
                place.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, place)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                             "--wheel-dir", str(out), str(context)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("sidemesh-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_the_copied_files_build_every_package_and_its_data(wheel):
    names = set(wheel.namelist())
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(ROOT), include=find["include"])
    assert packages
    for package in packages:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            for file in (ROOT / package).glob(pattern):
                assert file.relative_to(ROOT).as_posix() in names, file


def test_the_wheel_installs_the_sidemesh_console_script_and_carries_the_readme(wheel):
    entry_points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert f"sidemesh = {PYPROJECT['project']['scripts']['sidemesh']}" in text
    metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert (ROOT / PYPROJECT["project"]["readme"]).read_text().splitlines()[0] in metadata


def test_the_image_runs_sidemesh_as_the_non_root_user_of_the_manifests():
    assert FINAL.all("ENTRYPOINT")[-1].exec_form() == ["sidemesh"]
    assert "sidemesh" in PYPROJECT["project"]["scripts"]
    user = FINAL.all("USER")[-1].value
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    assert int(uid) == InjectorConfig().run_as_user
    run_as = {t["spec"]["securityContext"]["runAsUser"] for docs in rendered_all().values() for d in docs
              if d["kind"] == "Deployment" for t in [d["spec"]["template"]]}
    assert run_as == {int(uid)}


def test_the_image_holds_the_environment_the_build_stage_made():
    copy = next(c for c in FINAL.all("COPY") if c.copy_parts()[0].get("from") == BUILD.name)
    _, sources, destination = copy.copy_parts()
    venv = next(r.value.split()[-1] for r in BUILD.all("RUN") if "-m venv" in r.value)
    assert sources == [venv] and destination == venv
    env = " ".join(e.value for e in FINAL.all("ENV"))
    assert f"PATH={venv}/bin:$PATH" in env
