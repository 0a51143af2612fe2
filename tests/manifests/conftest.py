from __future__ import annotations

from pathlib import Path

import pytest

from .render import rendered_all
from .schemas import kubernetes_versions


@pytest.fixture(scope="session")
def rendered() -> dict[Path, list[dict]]:
    """Every kustomization under manifests/, rendered once: directory -> its documents."""
    return rendered_all()


@pytest.fixture(scope="session")
def versions() -> list[str]:
    return kubernetes_versions()
