from __future__ import annotations

from pathlib import Path

import pytest

from model_server.examples import tabular_model
from tests.model_server.models import write_echo_models
from tests.servers import ModelServerProcess


@pytest.fixture(scope="session")
def repo(tmp_path_factory) -> Path:
    """The tabular example (v1-v3) plus one echo model per datatype; no heavy model."""
    root = tmp_path_factory.mktemp("repo")
    for version in (1, 2, 3):
        path = root / "tabular" / str(version) / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(tabular_model(version).SerializeToString())
    write_echo_models(root)
    return root


@pytest.fixture(scope="session")
def server(repo) -> ModelServerProcess:
    with ModelServerProcess(repo) as proc:
        yield proc
