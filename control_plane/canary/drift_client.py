"""Reads the drift detector's verdicts on a candidate (``--drift-url``), for the drift gate.

The detector evaluates each closed window of a model version against that version's
reference and keeps the evaluations (``GET /v1/models/{m}/versions/{v}/evaluations``).
A canary fails on the first "drift" verdict evaluated after it started.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import aiohttp

from .gates import DriftView

__all__ = ["DriftClient"]

_LIMIT = 50  # evaluations read per check: more than a canary phase closes windows


def _path(*parts: str) -> str:
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


@dataclass
class DriftClient:
    url: str
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--drift-url: expected the drift detector's http(s):// URL, got {self.url!r}")
        self.url = self.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  headers={"User-Agent": "sidemesh-control-plane"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, path: str) -> tuple[int, dict]:
        async with self._client().get(self.url + path) as resp:
            try:
                doc = await resp.json(content_type=None)
            except ValueError:
                doc = {}
            return resp.status, doc if isinstance(doc, dict) else {}

    async def reference_problem(self, model: str, version: str) -> str | None:
        """None when the detector holds a reference for the version; else why the drift gate
        could never pass (no reference, or the detector is unreachable)."""
        try:
            status, doc = await self._get(f"/v1/references/{_path(model, version)}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"the drift detector at {self.url} cannot be reached ({type(exc).__name__}: {exc})"
        if status == 200 and doc.get("inputs"):
            return None
        if status in (200, 404):
            return (f"the drift detector at {self.url} has no reference for model {model!r} version {version!r}; "
                    f"upload one (`sidemesh drift reference {model} --version {version} --data FILE`) or pass --no-drift")
        return f"the drift detector at {self.url} answered {status}: {doc.get('error', '')}"

    async def check(self, model: str, version: str, since: float) -> DriftView:
        try:
            status, doc = await self._get(f"/v1/models/{_path(model, 'versions', version)}/evaluations?limit={_LIMIT}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return DriftView(error=f"{self.url} unreachable ({type(exc).__name__}: {exc})")
        if status != 200:
            return DriftView(error=f"{self.url} answered {status}: {doc.get('error', '')}")
        recent = [e for e in doc.get("evaluations", []) if isinstance(e, dict) and (e.get("evaluated_at") or 0) >= since]
        if not recent:
            return DriftView()
        recent.sort(key=lambda e: e.get("evaluated_at") or 0)
        drifted = [e for e in recent if e.get("verdict") == "drift"]
        if not drifted:
            return DriftView(latest=recent[-1].get("verdict"))
        first = drifted[0]
        names = [f.get("name") or f.get("feature") for f in first.get("features", []) if isinstance(f, dict) and f.get("drifted")]
        shown = ", ".join(str(n) for n in names[:5] if n is not None) + (" ..." if len(names) > 5 else "")
        detail = f"{first.get('drifted_features', len(names))} drifted feature(s) in a window of {first.get('rows', '?')} rows"
        return DriftView(latest=recent[-1].get("verdict"), drift_at=first.get("evaluated_at"),
                         detail=detail + (f" ({shown})" if shown else ""))
