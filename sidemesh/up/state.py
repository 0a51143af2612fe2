"""The state directory: what ``up`` keeps between runs, so that a second run resumes.

```
<state>/models/v<N>/tabular/<N>/model.onnx   one repository per version (one model server each)
<state>/models/train.npy                     version 1's training features: the drift reference
<state>/control-plane.db, drift.db           routes and their history; references, windows, alerts
<state>/token                                the control plane's token file (one admin token)
<state>/webhook-secret                       the HMAC secret the detector signs alerts with
<state>/prometheus/, alertmanager/           generated configs and their data
<state>/logs/<child>.log                     every child's output
<state>/up.json                              while running: up's pid, the ports, the children
```

Only the small tabular example is written (never the 553 MB benchmark model), and only
what is missing: models, token and secret are kept as they are.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .config import MODEL, VERSIONS
from .errors import StateError

__all__ = ["StateFiles", "prepare", "claim", "write_run", "release"]

_TOKEN_NAME = "up"
_MODEL_CONFIG = {"max_batch_size": 64, "max_queue_delay_us": 1000}


@dataclass(frozen=True)
class StateFiles:
    root: Path

    def repository(self, version: str) -> Path:
        return self.root / "models" / f"v{version}"

    @property
    def train(self) -> Path:
        return self.root / "models" / "train.npy"

    @property
    def control_db(self) -> Path:
        return self.root / "control-plane.db"

    @property
    def drift_db(self) -> Path:
        return self.root / "drift.db"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def secret_file(self) -> Path:
        return self.root / "webhook-secret"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"

    @property
    def alertmanager(self) -> Path:
        return self.root / "alertmanager"

    @property
    def run_file(self) -> Path:
        return self.root / "up.json"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _models(files: StateFiles) -> list[str]:
    models = {v: files.repository(v) / MODEL / v / "model.onnx" for v in VERSIONS}
    if files.train.exists() and all(p.exists() and (p.parent.parent / "config.json").exists() for p in models.values()):
        return []
    from model_server.examples import tabular_data, tabular_model  # onnx: only when something is missing

    done = []
    for version, path in models.items():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(tabular_model(int(version)).SerializeToString())
            tmp.replace(path)
            done.append(f"wrote {path}")
        config = path.parent.parent / "config.json"
        if not config.exists():
            config.write_text(json.dumps(_MODEL_CONFIG, indent=2) + "\n")
    if not files.train.exists():
        import numpy as np

        tmp = files.train.with_name("train.tmp.npy")
        np.save(tmp, tabular_data(11, 4000)[0])  # what model_server.examples calls v1's training features
        tmp.replace(files.train)
        done.append(f"wrote {files.train} (version 1's training features, the drift reference)")
    return done


def _token(files: StateFiles) -> str:
    path = files.token_file
    if not path.exists():
        token = secrets.token_hex(16)
        _write_private(path, f"# written by sidemesh up: NAME TOKEN ROLE (control-plane --token-file)\n{_TOKEN_NAME} {token} admin\n")
        return token
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise StateError(f"{path}: cannot read the token file ({exc})") from None
    for line in lines:
        parts = line.split()
        if parts and not parts[0].startswith("#") and len(parts) >= 2 and (len(parts) == 2 or parts[2] == "admin"):
            return parts[1]
    raise StateError(f"{path}: no admin token ('NAME TOKEN admin'); remove the file to have a new one made")


def _secret(files: StateFiles) -> bytes:
    path = files.secret_file
    if not path.exists():
        _write_private(path, secrets.token_hex(32) + "\n")
    try:
        secret = path.read_bytes().strip()  # as the detector reads it
    except OSError as exc:
        raise StateError(f"{path}: cannot read the webhook secret ({exc})") from None
    if not secret:
        raise StateError(f"{path}: the webhook secret is empty; remove the file to have a new one made")
    return secret


def prepare(root: Path) -> tuple[StateFiles, str, bytes, list[str]]:
    """Create what is missing: (files, admin token, webhook secret, what was written)."""
    files = StateFiles(root)
    try:
        for d in (root, files.logs, files.prometheus, files.alertmanager):
            d.mkdir(parents=True, exist_ok=True)
        done = _models(files)
    except OSError as exc:
        raise StateError(f"--state-dir {root}: {exc}") from None
    return files, _token(files), _secret(files), done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(files: StateFiles) -> list[dict]:
    """Refuse a state directory that a running ``up`` holds (its up.json names a live pid);
    otherwise the children a previous run recorded and did not stop (it was killed)."""
    try:
        doc = json.loads(files.run_file.read_text())
        pid = int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # absent or unreadable: a previous run ended; nothing holds it
    if pid != os.getpid() and _alive(pid):
        raise StateError(f"another `sidemesh up` (pid {pid}) is using {files.root}; stop it first "
                         f"(Ctrl-C there, or kill -INT {pid}), or give another --state-dir")
    children = doc.get("children")
    return [c for c in children if isinstance(c, dict)] if isinstance(children, list) else []


def write_run(files: StateFiles, doc: dict) -> None:
    """up.json, replaced atomically, so a reader never sees half of it."""
    tmp = files.run_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(files.run_file)


def release(files: StateFiles) -> None:
    files.run_file.unlink(missing_ok=True)
