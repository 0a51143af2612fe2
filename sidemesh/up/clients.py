"""Small async clients of the control plane's admin API and the drift detector's API,
sharing ``up``'s one aiohttp session."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from .errors import UpError

__all__ = ["ApiError", "AdminApi", "DriftApi", "get_text"]

_TIMEOUT = aiohttp.ClientTimeout(total=10)


class ApiError(UpError):
    """A component refused a call or could not be reached; ``status`` is None for the latter."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def _call(session: aiohttp.ClientSession, method: str, url: str, headers: dict | None = None,
                json: object = None, data: bytes | None = None) -> tuple[int, object]:
    try:
        async with session.request(method, url, headers=headers, json=json, data=data, timeout=_TIMEOUT) as response:
            body = await response.json(content_type=None) if response.content_length != 0 else None
            return response.status, body
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise ApiError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None


async def get_text(session: aiohttp.ClientSession, url: str) -> str:
    try:
        async with session.get(url, timeout=_TIMEOUT) as response:
            if response.status != 200:
                raise ApiError(f"GET {url}: {response.status}", response.status)
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ApiError(f"GET {url}: {exc.__class__.__name__}: {exc}") from None


def _refused(method: str, url: str, status: int, body: object) -> ApiError:
    reason = body.get("error") if isinstance(body, dict) else None
    return ApiError(f"{method} {url}: {status}: {reason or body}", status)


@dataclass(frozen=True)
class AdminApi:
    session: aiohttp.ClientSession
    base: str
    token: str

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    async def route(self, model: str) -> tuple[int, dict] | None:
        """(routing version, route document), or None when the model has no route."""
        url = f"{self.base}/v1/routes/{model}"
        status, body = await _call(self.session, "GET", url, self._headers())
        if status == 404:
            return None
        if status != 200:
            raise _refused("GET", url, status, body)
        return body["version"], body["route"]

    async def put_route(self, model: str, route: dict) -> int:
        """Create or replace the route; the new routing version."""
        url = f"{self.base}/v1/routes/{model}"
        status, body = await _call(self.session, "PUT", url, self._headers(), json=route)
        if status != 200:
            raise _refused("PUT", url, status, body)
        return body["version"]


@dataclass(frozen=True)
class DriftApi:
    session: aiohttp.ClientSession
    base: str

    async def has_reference(self, model: str, version: str) -> bool:
        url = f"{self.base}/v1/references/{model}/{version}"
        status, body = await _call(self.session, "GET", url)
        if status not in (200, 404):
            raise _refused("GET", url, status, body)
        return status == 200

    async def put_reference(self, model: str, version: str, input_name: str, stats: bytes) -> None:
        """Upload serialized ``InputStats`` (what ``sidemesh drift reference`` sends)."""
        url = f"{self.base}/v1/references/{model}/{version}?input={input_name}"
        status, body = await _call(self.session, "PUT", url, {"Content-Type": "application/x-protobuf"}, data=stats)
        if status != 201:
            raise _refused("PUT", url, status, body)

    async def models(self) -> list[dict]:
        url = f"{self.base}/v1/models"
        status, body = await _call(self.session, "GET", url)
        if status != 200:
            raise _refused("GET", url, status, body)
        return body["models"]
