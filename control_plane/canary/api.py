"""The canary routes of the admin API (``/v1/canaries``): start, status, list, abort.

Registered through ``admin.guard`` like every ``/v1`` route (reads need a token, changes an
admin one); errors are the controller's and the spec's, mapped to status codes by the
admin app's one error middleware.
"""

from __future__ import annotations

from aiohttp import web

from ..admin import guard, json_body
from .controller import CanaryController
from .spec import CanarySpec

__all__ = ["CONTROLLER_KEY", "add_canary_routes"]

CONTROLLER_KEY = web.AppKey("canaries", CanaryController)


async def _start(request: web.Request, author: str) -> web.Response:
    spec = CanarySpec.from_dict(await json_body(request, 'a canary such as {"to": "v2", "steps": [10, 50, 100]}'))
    canary = await request.app[CONTROLLER_KEY].start(request.match_info["model"], spec, author)
    return web.json_response(canary.to_dict(), status=201)


async def _status(request: web.Request, author: str) -> web.Response:
    return web.json_response(request.app[CONTROLLER_KEY].status(request.match_info["model"]).to_dict())


async def _list(request: web.Request, author: str) -> web.Response:
    return web.json_response({"canaries": [c.to_dict() for c in request.app[CONTROLLER_KEY].statuses()]})


async def _abort(request: web.Request, author: str) -> web.Response:
    return web.json_response(request.app[CONTROLLER_KEY].abort(request.match_info["model"], author).to_dict())


def add_canary_routes(app: web.Application, controller: CanaryController) -> None:
    app[CONTROLLER_KEY] = controller
    path = "/v1/canaries/{model}"
    app.router.add_get("/v1/canaries", guard(_list, write=False))
    app.router.add_get(path, guard(_status, write=False))
    app.router.add_post(path, guard(_start, write=True))
    app.router.add_post(path + "/abort", guard(_abort, write=True))
