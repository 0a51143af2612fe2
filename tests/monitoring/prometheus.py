"""A real Prometheus (Debian's 2.42) as a test peer: scrapes given targets every second,
evaluates given rule files every second, and answers PromQL over its HTTP API.

Targets get static labels in place of what the Prometheus Operator adds in Kubernetes
(``namespace`` above all), so the dashboards' queries work on both unchanged.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.control_plane.peers import free_port, wait_until

__all__ = ["PrometheusProcess", "Job", "finite"]


@dataclass(frozen=True)
class Job:
    name: str
    targets: tuple[str, ...]  # host:port, scraped at /metrics
    labels: dict = field(default_factory=dict)


def finite(result: list[dict]) -> list[dict]:
    """The series of an instant-vector result whose value is a number (not NaN or Inf)."""
    return [r for r in result if math.isfinite(float(r["value"][1]))]


@dataclass
class PrometheusProcess:
    workdir: Path
    jobs: list[Job]
    rule_files: list[Path]
    port: int = field(default_factory=free_port)

    def start(self) -> "PrometheusProcess":
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise AssertionError("prometheus is not installed: apt-get install prometheus (Debian), as .ci/run does")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job.name, "static_configs": [{"targets": list(job.targets), "labels": job.labels}]}
                for job in self.jobs
            ],
        }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = open(self.workdir / "prometheus.log", "w")
        self.popen = subprocess.Popen(
            [binary, f"--config.file={config_file}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, what="Prometheus to be ready")
        return self

    def _ready(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.popen.returncode}):\n{self.output()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def output(self) -> str:
        self.log.flush()
        return (self.workdir / "prometheus.log").read_text()

    def api(self, path: str, **params) -> object:
        """GET /api/v1/<path>; the ``data`` of a success, an AssertionError with the error otherwise."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}", timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query now: the series of its vector result (``metric``, ``value``)."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise AssertionError(f"expected an instant vector from {expr!r}, got {data['resultType']}")
        return data["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": match})

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def rule_health(self) -> list[tuple[str, str]]:
        """(rule name, last error) of every rule whose last evaluation failed."""
        return [(rule["name"], rule.get("lastError", "")) for group in self.api("rules")["groups"]
                for rule in group["rules"] if rule.get("health") == "err"]

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        code = self.popen.wait()
        self.log.close()
        return code
