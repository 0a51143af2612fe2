"""Real server processes for tests: started on 127.0.0.1 with free ports, stopped after.

A server prints its ports and a "ready" line on stdout; the helper waits for those lines
(an event, with a time bound), never for a fixed sleep.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelServerProcess", "write_config"]

_PORTS = re.compile(r"REST on http://([\d.]+):(\d+), gRPC on [\d.]+:(\d+)")


def write_config(repo: Path, model: str, **config) -> None:
    (repo / model / "config.json").write_text(json.dumps(config))


@dataclass
class ModelServerProcess:
    repository: Path
    extra_args: list[str] = field(default_factory=list)
    startup_timeout: float = 60.0
    lines: list[str] = field(default_factory=list)

    def __enter__(self) -> "ModelServerProcess":
        cmd = [sys.executable, "-m", "sidemesh", "model-server", "--repository", str(self.repository),
               "--http-port", "0", "--grpc-port", "0", *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()
        match = self.wait_for(_PORTS)
        self.host, self.http_port, self.grpc_port = match.group(1), int(match.group(2)), int(match.group(3))
        self.wait_for(re.compile(r": (ready|NOT ready)"))
        return self

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern, timeout: float | None = None) -> re.Match:
        while True:
            try:
                line = self._queue.get(timeout=timeout or self.startup_timeout)
            except queue.Empty:
                raise AssertionError(f"server did not print {pattern.pattern!r}; output:\n{''.join(self.lines)}") from None
            if line is None:
                raise AssertionError(f"server exited ({self.proc.wait()}); output:\n{''.join(self.lines)}")
            match = pattern.search(line)
            if match:
                return match

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def stop(self) -> int:
        """SIGTERM, wait (killing after 20 s), and return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait()
        self._pumper.join(timeout=5)
        self.proc.stdout.close()
        return code

    def __exit__(self, *exc) -> None:
        self.stop()
