"""The state directory: written once, kept on resume, held by one ``up`` at a time."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from sidemesh.up.errors import StateError
from sidemesh.up.state import claim, prepare, release, write_run


def test_the_first_run_writes_one_repository_per_version_the_reference_data_a_token_and_a_secret(tmp_path: Path):
    files, token, secret, written = prepare(tmp_path / "s")
    for v in ("1", "2", "3"):
        model = onnx.load(str(files.repository(v) / "tabular" / v / "model.onnx"))
        assert model.graph.name == f"tabular_v{v}"
        assert json.loads((files.repository(v) / "tabular" / "config.json").read_text())["max_batch_size"] == 64
        assert [p.name for p in (files.repository(v) / "tabular").iterdir() if p.is_dir()] == [v]  # one version each
    assert np.load(files.train).shape == (4000, 8)
    assert not list((tmp_path / "s").rglob("heavy"))  # never the 553 MB benchmark model
    assert len(written) == 4
    assert len(token) == 32 and f"up {token} admin" in files.token_file.read_text()
    assert len(secret) == 64 and files.secret_file.read_bytes().strip() == secret
    for private in (files.token_file, files.secret_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_second_run_keeps_everything_and_writes_nothing(tmp_path: Path):
    files, token, secret, _ = prepare(tmp_path)
    before = (files.repository("2") / "tabular" / "2" / "model.onnx").stat().st_mtime_ns
    again, token2, secret2, written = prepare(tmp_path)
    assert (token2, secret2, written) == (token, secret, [])
    assert (again.repository("2") / "tabular" / "2" / "model.onnx").stat().st_mtime_ns == before


def test_a_token_file_without_an_admin_token_is_refused_naming_the_file(tmp_path: Path):
    (tmp_path / "token").write_text("grafana 51a3c5e7 read\n")
    with pytest.raises(StateError, match=r"token: no admin token \('NAME TOKEN admin'\)"):
        prepare(tmp_path)


def test_a_state_directory_held_by_a_live_up_is_refused_and_a_dead_ones_is_taken(tmp_path: Path):
    files, *_ = prepare(tmp_path)
    write_run(files, {"pid": os.getppid()})  # alive: the process running these tests
    with pytest.raises(StateError, match=rf"another `sidemesh up` \(pid {os.getppid()}\) is using"):
        claim(files)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_run(files, {"pid": gone.pid})
    claim(files)
    release(files)
    assert not files.run_file.exists()
    claim(files)  # no up.json at all
