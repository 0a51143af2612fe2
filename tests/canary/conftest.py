"""Fixtures of the canary suite: two model servers shared by the session, and a factory of
whole meshes (``canary_mesh(kind, ...)``) torn down after each test.

- ``baseline_server``: tabular versions 1 and 2 with the same weights (v1's), so version 2
  behind its own sidecar is a candidate as good as the baseline.
- ``disagree_server``: started on first use; its tabular version 2 rotates v1's classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model_server.examples import tabular_model
from tests.canary.mesh import CanaryMesh, build_mesh
from tests.canary.peers import disagreeing_model, write_model
from tests.servers import ModelServerProcess


@pytest.fixture(scope="session")
def baseline_server(tmp_path_factory) -> Iterator[ModelServerProcess]:
    repo = tmp_path_factory.mktemp("canary-baseline")
    for version in ("1", "2"):
        write_model(repo, "tabular", version, tabular_model(1))
    with ModelServerProcess(repo) as server:
        yield server


@pytest.fixture(scope="session")
def disagree_server(tmp_path_factory) -> Iterator[Callable[[], ModelServerProcess]]:
    started: list[ModelServerProcess] = []

    def get() -> ModelServerProcess:
        if not started:
            repo = tmp_path_factory.mktemp("canary-disagree")
            write_model(repo, "tabular", "2", disagreeing_model())
            server = ModelServerProcess(repo)
            try:
                started.append(server.__enter__())
            except BaseException:
                if hasattr(server, "proc"):
                    server.stop()  # not left running when it never got ready
                raise
        return started[0]

    yield get
    for server in started:
        server.stop()


@pytest.fixture
def canary_mesh(tmp_path: Path, baseline_server, disagree_server) -> Iterator[Callable[..., CanaryMesh]]:
    """``canary_mesh(kind, **options) -> CanaryMesh`` (see ``tests.canary.mesh.build_mesh``);
    every mesh made is stopped after the test."""
    made: list[CanaryMesh] = []

    def make(kind: str = "good", **options) -> CanaryMesh:
        workdir = tmp_path / f"mesh-{len(made)}-{kind}"
        workdir.mkdir()
        mesh = build_mesh(kind, workdir, baseline_server, disagree_server, **options)
        made.append(mesh)
        return mesh

    yield make
    for mesh in reversed(made):
        mesh.stop()
