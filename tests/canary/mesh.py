"""A whole mesh for one canary scenario, with real processes on loopback.

``build_mesh`` starts: a webhook receiver; the drift detector when asked (references: v1's
training data for version 1, and for version 2 the same data, or, for the ``drift``
candidate, that data shifted by one standard deviation, so traffic drawn like the training
data gives version 2 a "drift" verdict); the control plane (with the canary flags:
webhook, secret, drift URL, load reports and ticks every 0.2 s); the route ``1=100, 2=0``;
and a real sidecar per version: version 1's is the entry every request goes to, version
2's serves the candidate, whose behaviour is the ``kind``:

- ``good``: the same model as version 1 (the same weights, so every label agrees);
- ``errors``: a ``FaultyModel`` before the model server answers 500 for ``error_share``;
- ``slow``: a ``FaultyModel`` adds ``delay_s`` to every answer;
- ``disagree``: a model server whose version 2 rotates v1's classes (no label agrees);
- ``drift``: the same model as version 1, judged against a shifted reference.

``CanaryMesh.stop`` ends everything it started, in reverse order.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_server.examples import tabular_data
from tests.canary.peers import FaultyModel, Traffic, WebhookReceiver, bodies, v2_tensors
from tests.control_plane.peers import ControlPlaneProcess, wait_until
from tests.drift.peers import DriftProcess
from tests.faults.peers import applied_state
from tests.servers import ModelServerProcess
from tests.sidecar.peers import SidecarProcess, total

__all__ = ["BASELINE", "CANDIDATE", "KINDS", "MODEL", "SECRET", "CanaryMesh", "build_mesh", "canary_flags"]

MODEL, BASELINE, CANDIDATE = "tabular", "1", "2"
KINDS = ("good", "errors", "slow", "disagree", "drift")
SECRET = b"canary-webhook-secret-3d9f"
DRIFT_SHIFT = 1.0  # standard deviations between version 2's reference and the traffic


def canary_flags(receiver_url: str | None, secret_file: Path | None, drift_url: str | None,
                 tick_s: float = 0.2) -> list[str]:
    """The control plane's canary flags: fast load reports and ticks, and the webhook, its
    secret and the drift detector when given."""
    flags = ["--load-report-interval", str(tick_s), "--canary-tick", str(tick_s)]
    for flag, value in (("--webhook", receiver_url), ("--webhook-secret-file", secret_file), ("--drift-url", drift_url)):
        if value:
            flags += [flag, str(value)]
    return flags


@dataclass
class CanaryMesh:
    kind: str
    cp: ControlPlaneProcess
    baseline: SidecarProcess  # version 1: the entry sidecar
    candidate: SidecarProcess  # version 2
    receiver: WebhookReceiver
    secret: bytes
    workdir: Path
    faulty: FaultyModel | None = None
    detector: DriftProcess | None = None
    model: str = MODEL
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    # --- routing ------------------------------------------------------------------------

    def put_route(self, weights: dict[str, int], mirrors: dict[str, float] | None = None, **extra) -> int:
        """PUT the route and wait until both sidecars applied it; returns its routing version."""
        doc = {"backends": [{"version": v, "weight": w} for v, w in weights.items()],
               "mirrors": [{"version": v, "percent": p} for v, p in (mirrors or {}).items()], **extra}
        status, body = self.cp.api("PUT", f"/v1/routes/{self.model}", doc)
        assert status == 200, body
        self.wait_applied(body["version"])
        return body["version"]

    def wait_applied(self, version: int, timeout: float = 20.0) -> None:
        """Both sidecars run routing version ``version`` (or later) and know each other's endpoint."""
        sidecars = (self.baseline, self.candidate)
        wait_until(lambda: all(applied_state(s, self.model) >= version for s in sidecars), timeout,
                   f"both sidecars applying routing version {version}")

        def endpoints() -> bool:
            for s in sidecars:
                clusters = (json.loads(s.admin("/config_dump")[2]).get("table") or {}).get("clusters") or {}
                if not all(clusters.get(f"{self.model}|{v}", {}).get("endpoints") for v in (BASELINE, CANDIDATE)):
                    return False
            return True

        wait_until(endpoints, timeout, "each sidecar knowing both versions' endpoints")

    def route(self) -> dict:
        """``{"version": N, "route": {...}}`` as the admin API has it now."""
        status, body = self.cp.api("GET", f"/v1/routes/{self.model}")
        assert status == 200, body
        return body

    # --- the canary API -----------------------------------------------------------------

    def start_canary(self, **spec) -> dict:
        """POST /v1/canaries/tabular with ``{"to": "2", **spec}``; the 201 status doc."""
        status, body = self.cp.api("POST", f"/v1/canaries/{self.model}", {"to": CANDIDATE, **spec})
        assert status == 201, (status, body)
        return body

    def canary(self) -> dict:
        status, body = self.cp.api("GET", f"/v1/canaries/{self.model}")
        assert status == 200, (status, body)
        return body

    def wait_canary(self, until: Callable[[dict], object] = lambda doc: not doc["active"], timeout: float = 60.0,
                    what: str = "the canary to finish") -> dict:
        """Poll the status doc until ``until(doc)`` holds (no canary yet: keep polling); returns that doc."""
        found: list[dict] = []

        def check() -> bool:
            status, doc = self.cp.api("GET", f"/v1/canaries/{self.model}")
            if status == 404:  # none started yet
                return False
            assert status == 200, (status, doc)
            found[:] = [doc]
            return bool(until(doc))

        try:
            wait_until(check, timeout, what, every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {json.dumps(found[-1] if found else None)[:2000]}") from None
        return found[-1]

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """``sidemesh canary ARGS --control-plane URL`` as a process (text output captured)."""
        env = {k: v for k, v in os.environ.items() if k != "SIDEMESH_TOKEN"}
        return subprocess.run([sys.executable, "-m", "sidemesh", "canary", *args, "--control-plane", self.cp.url],
                              check=False, capture_output=True, text=True, timeout=timeout, env=env)

    # --- traffic, measurements, webhooks -------------------------------------------------

    def traffic(self, rate: float = 100.0, shift: float = 0.0, **kwargs) -> Traffic:
        """Paced load into the entry sidecar (version 1's), not started yet."""
        return Traffic(self.baseline.port, bodies(shift=shift), self.model, rate=rate, **kwargs)

    def shadow_rows(self) -> tuple[int, int]:
        """(agreed, compared) rows of the copies the entry sidecar mirrored to version 2."""
        samples = self.baseline.metrics()
        return (int(total(samples, "sidemesh_mirror_agreed_rows_total", shadow_version=CANDIDATE)),
                int(total(samples, "sidemesh_mirror_compared_rows_total", shadow_version=CANDIDATE)))

    def verdict(self, version: str = CANDIDATE) -> dict | None:
        """The detector's latest evaluation of ``version`` (None: none yet)."""
        status, body = self.detector.api("GET", f"/v1/models/{self.model}/versions/{version}")
        return body if status == 200 else None

    def events(self) -> list[dict]:
        """Canary webhook events received so far, in order."""
        return self.receiver.events("canary")

    def wait_event(self, status: str, timeout: float = 30.0) -> dict:
        """The first canary webhook event with this ``status`` (waiting for it, bounded)."""
        return wait_until(lambda: next((e for e in self.events() if e.get("status") == status), None), timeout,
                          f"a canary webhook event {status!r}", every=0.05)

    # --- lifetime -----------------------------------------------------------------------

    def processes(self) -> list[subprocess.Popen]:
        found = [self.cp.popen, self.baseline.proc, self.candidate.proc]
        return found + ([self.detector.popen] if self.detector else [])

    def stop(self) -> None:
        self._stack.close()


def _together(*starts: Callable[[], object]) -> None:
    """Run each ``start`` in its own thread and wait for all; the first failure is raised."""
    with ThreadPoolExecutor(len(starts)) as pool:
        for future in [pool.submit(start) for start in starts]:
            future.result()


def _upload_reference(detector: DriftProcess, version: str, data: np.ndarray) -> None:
    status, body = detector.api("PUT", f"/v1/references/{MODEL}/{version}?input=features", v2_tensors(data))
    assert status == 201, body


def build_mesh(kind: str, workdir: Path, baseline_server: ModelServerProcess,
               disagree_server: Callable[[], ModelServerProcess], *, error_share: float = 0.2, delay_s: float = 0.15,
               detector: bool | None = None, window_rows: int = 200, webhooks: bool = True, cp_args: tuple[str, ...] = (),
               sidecar_args: tuple[str, ...] = ()) -> CanaryMesh:
    """Start a mesh whose candidate is ``kind`` (see the module docstring). ``detector``
    (default: only for ``drift``) adds the drift detector, with windows of ``window_rows``
    rows; ``webhooks`` False leaves ``--webhook`` out (the receiver still runs); ``cp_args`` and
    ``sidecar_args`` are added to the control plane's and each sidecar's arguments."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    detector = kind == "drift" if detector is None else detector
    stack = contextlib.ExitStack()
    try:
        receiver = WebhookReceiver()
        stack.callback(receiver.close)
        secret_file = workdir / "webhook-secret"
        secret_file.write_bytes(SECRET + b"\n")

        upstream, faulty = baseline_server.http, None
        if kind in ("errors", "slow"):
            faulty = FaultyModel(baseline_server.http, error_share if kind == "errors" else 0.0,
                                 delay_s if kind == "slow" else 0.0)
            stack.callback(faulty.close)
            upstream = faulty.address
        elif kind == "disagree":
            upstream = disagree_server().http

        drift_process = None
        stats_args: list[str] = []
        if detector:
            drift_process = DriftProcess(workdir / "drift.db", ["--window-rows", window_rows, "--window-seconds", 0,
                                                               "--min-rows", min(100, window_rows), "--alpha", 0.0001,
                                                               "--fire-after", 1, "--resolve-after", 1,
                                                               "--checkpoint-interval", 60])
            stack.callback(lambda: drift_process.stop() if hasattr(drift_process, "popen") else None)
            stats_args = ["--drift", f"127.0.0.1:{drift_process.stats_port}", "--stats-interval", "0.2"]
        flags = canary_flags(receiver.url if webhooks else None, secret_file if webhooks else None,
                             drift_process.url if drift_process else None)
        cp = ControlPlaneProcess(workdir / "cp.db", extra_args=[*flags, *cp_args])
        stack.callback(lambda: cp.stop() if hasattr(cp, "popen") else None)
        # Start what does not depend on each other at once: the detector's URL is known before it runs.
        _together(cp.start, *([drift_process.start] if drift_process else []))
        if drift_process:
            train, _ = tabular_data(11, 4000)  # version 1's training features
            _upload_reference(drift_process, BASELINE, train)
            _upload_reference(drift_process, CANDIDATE, train + np.float32(DRIFT_SHIFT if kind == "drift" else 0.0))
        status, body = cp.api("PUT", f"/v1/routes/{MODEL}", {"backends": [{"version": BASELINE, "weight": 100},
                                                                           {"version": CANDIDATE, "weight": 0}]})
        assert status == 200, body

        sidecars = [SidecarProcess(MODEL, version, address, control_plane=f"127.0.0.1:{cp.xds_port}",
                                   extra_args=["--static-after", "never", *stats_args, *sidecar_args])
                    for version, address in ((BASELINE, baseline_server.http), (CANDIDATE, upstream))]
        for sidecar in sidecars:
            stack.callback(lambda s=sidecar: s.stop() if hasattr(s, "proc") else None)
        _together(*(sidecar.start for sidecar in sidecars))  # each waits for its "ready" line
        mesh = CanaryMesh(kind, cp, sidecars[0], sidecars[1], receiver, SECRET, workdir, faulty, drift_process)
        mesh.wait_applied(body["version"])
        wait_until(lambda: {(n.get("version"), n.get("connected")) for n in cp.nodes()} >= {(BASELINE, True), (CANDIDATE, True)},
                   20, "both sidecars registered with the control plane")
        mesh._stack = stack
        return mesh
    except BaseException:
        stack.close()
        raise
