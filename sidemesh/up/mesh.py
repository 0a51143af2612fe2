"""The whole mesh on one machine: which children run, in which order, and what they need.

Start order (each tier waits until the one before is ready; stop is the reverse):

0. Alertmanager, when on the PATH (before Prometheus, which re-sends late otherwise);
1. Prometheus, the control plane, the drift detector and one model server per version;
   then the route (90/10, version 3 at weight 0) unless the control plane has one, and
   the drift references unless the detector has them;
2. one sidecar per version (each becomes ready once every version's endpoints are known).

The alert receiver runs inside ``up`` itself and starts before everything else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import socket

import aiohttp

from .board import Console, describe_route
from .clients import AdminApi, DriftApi
from .config import HOST, MODEL, VERSIONS, UpConfig
from .configs import (INSTALL_HINT, Monitoring, alertmanager_argv, alertmanager_config, prometheus_argv,
                      prometheus_config, rules_file, write_yaml)
from .errors import StartError, UpError
from .processes import ChildSpec, StopReport, Supervisor, python_child, stop_leftovers
from .receiver import Alert, AlertReceiver
from .state import StateFiles, claim, prepare, release, write_run

__all__ = ["Mesh", "INITIAL_ROUTE", "ports_in_use"]

INITIAL_ROUTE = {"backends": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}, {"version": "3", "weight": 0}]}
_STATS_INTERVAL_S = "0.5"  # sidecar reports: often, so that a shift reaches the detector within a second or two


def ports_in_use(ports: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Those a server could not bind now (bound as servers bind: with SO_REUSEADDR, so that
    connections closing in TIME_WAIT do not count, a listener does)."""
    busy = []
    for name, port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                busy.append((name, port))
    return busy


class Mesh:
    def __init__(self, config: UpConfig, console: Console, monitoring: Monitoring) -> None:
        self.config, self.console, self.monitoring = config, console, monitoring
        self.plan = config.ports
        self.supervisor: Supervisor | None = None
        self.receiver: AlertReceiver | None = None
        self.files: StateFiles | None = None
        self.token = ""
        self.on_alert = lambda alert: None  # the demo listens here too
        self._claimed = False

    # -- addresses

    @property
    def started(self) -> bool:
        """Whether this run holds the state directory (and so has something to stop)."""
        return self._claimed

    def url(self, port: int, path: str = "") -> str:
        return f"http://{HOST}:{port}{path}"

    def used_ports(self) -> list[tuple[str, int]]:
        skip = {"prometheus"} if self.monitoring.prometheus is None else set()
        skip |= {"alertmanager"} if self.monitoring.alertmanager is None else set()
        return [(name, port) for name, port in self.plan.named() if name not in skip]

    def header(self) -> list[str]:
        p, e = self.plan, self.plan.entry
        cp = self.url(p.control_admin)
        lines = [
            f"sidemesh up: state in {self.config.state_dir}, logs in {self.config.state_dir / 'logs'}",
            f"  V2 endpoint      {self.url(e.sidecar_http)} (REST), {HOST}:{e.sidecar_grpc} (gRPC): version 1's sidecar; "
            "any sidecar routes the same",
            f"  control plane    {cp} (admin API), xDS on {HOST}:{p.control_xds}",
            f"  drift detector   {self.url(p.drift_http, '/v1/models')}, report {self.url(p.drift_http, f'/report/{MODEL}')}",
            f"  alert receiver   {self.url(p.receiver, '/alerts')} (GET lists what arrived)",
        ]
        for name, binary, port, path in (("prometheus", self.monitoring.prometheus, p.prometheus, "/targets"),
                                          ("alertmanager", self.monitoring.alertmanager, p.alertmanager, "/#/alerts")):
            lines.append(f"  {name:<16} " + (self.url(port, path) if binary else "not running (not on the PATH)"))
        lines.append(f"  export SIDEMESH_TOKEN={self.token}   # then: sidemesh routes {MODEL} --control-plane {cp}")
        return lines

    def port_plan(self) -> str:
        return "ports: " + ", ".join(f"{name} {port}" for name, port in self.used_ports())

    # -- start

    async def start(self, session: aiohttp.ClientSession) -> None:
        cfg = self.config
        files, self.token, secret, written = await asyncio.to_thread(prepare, cfg.state_dir)  # writes models: a second
        self.files = files
        leftovers = await stop_leftovers(claim(files), cfg.stop_grace)
        if leftovers:
            self.console.print(f"sidemesh up: the last run was killed before it could stop {', '.join(leftovers)}; "
                               "stopped them now")
        busy = ports_in_use(self.used_ports())
        if busy:
            raise UpError("ports in use on 127.0.0.1: " + ", ".join(f"{port} ({name})" for name, port in busy)
                          + "; stop what holds them, or run with --ports free (or --ports BASE)")
        self._claimed = True
        self._record()
        for line in written:
            self.console.print(f"sidemesh up: {line}")
        self.console.print(f"sidemesh up: {self.port_plan()}")
        missing = self.monitoring.missing()
        if missing:
            self.console.print(f"sidemesh up: {' and '.join(missing)} not found on the PATH, so not started; {INSTALL_HINT}")

        self.receiver = AlertReceiver(HOST, self.plan.receiver, secret, self._alert, self.console.event)
        await self.receiver.start()
        self.supervisor = Supervisor(files.logs)
        admin = AdminApi(session, self.url(self.plan.control_admin), self.token)
        drift = DriftApi(session, self.url(self.plan.drift_http))
        for tier, specs in enumerate(self._tiers()):
            if tier == 2:
                await self._ensure_route(admin)
                await self._ensure_references(drift)
            if specs:
                self.console.print(f"sidemesh up: starting {', '.join(s.name for s in specs)}")
                try:
                    await self.supervisor.start_tier(specs, session, cfg.start_timeout)
                finally:
                    self._record()
        await self._wait_routable(session)

    def alert_lines(self) -> list[str]:
        return [a.line() for a in self.receiver.alerts] if self.receiver else []

    def _alert(self, alert: Alert) -> None:
        self.console.event(alert.line())
        self.on_alert(alert)

    def _tiers(self) -> list[list[ChildSpec]]:
        files, p, m = self.files, self.plan, self.monitoring
        first: list[ChildSpec] = []
        if m.alertmanager:
            config = write_yaml(files.alertmanager / "alertmanager.yml", alertmanager_config(self.receiver.url("alertmanager")))
            first.append(ChildSpec("alertmanager", tuple(alertmanager_argv(m.alertmanager, config, files.alertmanager / "data",
                                                                           p.alertmanager)),
                                   self.url(p.alertmanager, "/-/ready"), 0))
        second: list[ChildSpec] = []
        if m.prometheus:
            rules = rules_file()
            if rules is None:
                self.console.print("sidemesh up: no manifests/monitoring/rules.yaml beside this package (not a checkout), "
                                   "so Prometheus runs without sidemesh's rules")
            config = write_yaml(files.prometheus / "prometheus.yml",
                                prometheus_config(p, self.config.scrape_interval, m.alertmanager is not None, rules))
            second.append(ChildSpec("prometheus", tuple(prometheus_argv(m.prometheus, config, files.prometheus / "data",
                                                                        p.prometheus)),
                                    self.url(p.prometheus, "/-/ready"), 1))
        alerts = ["--webhook", self.receiver.url("detector"), "--webhook-secret-file", str(files.secret_file)]
        # Canaries (`sidemesh canary`) gate on the detector's verdicts and report to the same receiver.
        second.append(python_child("control-plane", "control-plane", [
            "--host", HOST, "--admin-port", str(p.control_admin), "--xds-port", str(p.control_xds),
            "--state", str(files.control_db), "--token-file", str(files.token_file),
            "--drift-url", self.url(p.drift_http), *alerts], self.url(p.control_admin, "/healthz"), 1))
        if m.alertmanager:
            alerts += ["--alertmanager", self.url(p.alertmanager)]
        second.append(python_child("drift", "drift", [
            "--host", HOST, "--port", str(p.drift_http), "--stats-port", str(p.drift_stats), "--state", str(files.drift_db),
            *self.config.drift.flags(), *alerts], self.url(p.drift_http, "/healthz/ready"), 1))
        for v in p.versions:
            second.append(python_child(f"model-server-{v.version}", "model-server", [
                "--repository", str(files.repository(v.version)), "--host", HOST,
                "--http-port", str(v.model_http), "--grpc-port", str(v.model_grpc)], self.url(v.model_http, "/v2/health/ready"), 1))
        third = [python_child(f"sidecar-{v.version}", "sidecar", [
            "--model", MODEL, "--version", v.version,
            "--upstream", self.url(v.model_http), "--upstream-grpc", f"{HOST}:{v.model_grpc}",
            "--listen", f"{HOST}:{v.sidecar_http}", "--grpc-listen", f"{HOST}:{v.sidecar_grpc}",
            "--admin", f"{HOST}:{v.sidecar_admin}", "--control-plane", f"{HOST}:{p.control_xds}",
            "--drift", f"{HOST}:{p.drift_stats}", "--stats-interval", _STATS_INTERVAL_S,
            "--static-after", "never", "--drain-timeout", "5"], self.url(v.sidecar_admin, "/healthz/ready"), 2)
            for v in p.versions]
        return [first, second, third]

    async def _wait_routable(self, session: aiohttp.ClientSession) -> None:
        """Until every sidecar knows an endpoint of every version. A sidecar is ready once it
        has every cluster's endpoint list, which may still be empty for a version whose
        sidecar connected after it; a request routed there now would get a 503."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout
        clusters = [f"{MODEL}|{v}" for v in VERSIONS]  # the control plane's cluster names
        while True:
            lacking = []
            for v in self.plan.versions:
                try:
                    async with session.get(self.url(v.sidecar_admin, "/config_dump"), timeout=aiohttp.ClientTimeout(total=5)) as r:
                        table = (await r.json()).get("table") or {}
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    raise StartError(f"sidecar-{v.version}: /config_dump failed ({exc})", f"sidecar-{v.version}") from None
                known = table.get("clusters", {})
                # only the versions the route uses (it may have dropped one) and up runs (it may name others)
                lacking += [f"sidecar-{v.version} has none for {c}" for c in clusters if c in known and not known[c].get("endpoints")]
            if not lacking:
                return
            if loop.time() > deadline:
                raise StartError("the sidecars do not know every version's endpoint: " + "; ".join(lacking))
            await asyncio.sleep(0.1)  # nothing announces it: poll

    async def _ensure_route(self, admin: AdminApi) -> None:
        found = await admin.route(MODEL)
        if found is not None:
            self.console.print(f"sidemesh up: route {MODEL} kept from the last run (routing version {found[0]}): "
                               f"{describe_route(found[1])}")
            return
        version = await admin.put_route(MODEL, INITIAL_ROUTE)
        self.console.print(f"sidemesh up: route {MODEL} created (routing version {version}): {describe_route(INITIAL_ROUTE)}")

    async def _ensure_references(self, drift: DriftApi) -> None:
        missing = [v for v in VERSIONS if not await drift.has_reference(MODEL, v)]
        if not missing:
            self.console.print(f"sidemesh up: drift references of versions {', '.join(VERSIONS)} kept from the last run")
            return
        from drift.reference import load_reference  # numpy and the sketches: only when uploading

        sketch = (await asyncio.to_thread(load_reference, self.files.train, "features"))["features"]
        for v in missing:
            await drift.put_reference(MODEL, v, "features", sketch.to_proto(MODEL, v, "features").SerializeToString())
        self.console.print(f"sidemesh up: drift references of versions {', '.join(missing)} uploaded from {self.files.train} "
                           f"({sketch.rows} rows of version 1's training features)")

    # -- while running

    def _record(self) -> None:
        if not self._claimed:
            return
        children = [c.describe() for c in self.supervisor.children] if self.supervisor else []
        write_run(self.files, {"pid": os.getpid(), "state_dir": str(self.config.state_dir), "token_file": str(self.files.token_file),
                               "ports": dict(self.used_ports()), "plan": dataclasses.asdict(self.plan), "children": children})

    async def watch(self) -> None:
        """Say so when a child exits while the mesh runs (the board shows the rest)."""
        pending = {c.exited: c for c in self.supervisor.children if c.returncode is None}
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                child = pending.pop(task)
                self.console.event(f"{child.name} exited with code {child.returncode}; see {child.log}")
            self._record()

    # -- stop

    async def stop(self, hurry: asyncio.Event | None = None) -> tuple[StopReport, list[tuple[str, int]]]:
        """Every child, then the receiver; (what was stopped, ports still bound)."""
        report = StopReport()
        try:
            if self.supervisor is not None:
                report = await self.supervisor.stop_all(self.config.stop_grace, hurry)
        finally:
            if self.receiver is not None:
                await self.receiver.stop()
            if self._claimed:
                release(self.files)
        return report, ports_in_use(self.used_ports()) if self._claimed else []

