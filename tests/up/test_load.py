"""The demo's traffic: bodies like the training data or shifted, sent at a fixed rate,
each answer counted by the version that gave it."""

from __future__ import annotations

import asyncio
import itertools
import json

import aiohttp
import numpy as np
from aiohttp import web

from model_server.examples import tabular_data
from sidemesh.up.load import ROWS_PER_REQUEST, SHIFTED_FEATURES, Load, request_bodies
from tests.control_plane.peers import free_port


def _rows(bodies: list[bytes]) -> np.ndarray:
    tensors = [json.loads(b)["inputs"][0] for b in bodies]
    assert all(t["shape"] == [ROWS_PER_REQUEST, 8] and t["datatype"] == "FP32" for t in tensors)
    return np.array([t["data"] for t in tensors]).reshape(-1, 8)


def test_shifted_bodies_move_only_the_chosen_features_by_the_sigmas_asked():
    train = tabular_data(11, 4000)[0]
    clean, shifted = _rows(request_bodies(500, seed=3)), _rows(request_bodies(500, seed=3, shift_sigmas=1.5))
    moved = (shifted - clean).mean(axis=0) / train.std(axis=0)
    assert np.allclose(moved[list(SHIFTED_FEATURES)], 1.5, atol=0.01)
    assert np.allclose(np.delete(moved, SHIFTED_FEATURES), 0.0, atol=0.01)
    assert np.allclose(clean.mean(axis=0), train.mean(axis=0), atol=0.15)  # like the training data


def test_the_load_sends_the_target_and_counts_answers_by_version():
    versions = itertools.cycle(["1", "1", "1", "2"])
    failed = []

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        version = next(versions)
        if version == "2" and not failed:
            failed.append(version)
            return web.json_response({"error": "overloaded"}, status=503)
        return web.json_response({"outputs": []}, headers={"x-sidemesh-version": version})

    async def scenario() -> Load:
        app = web.Application()
        app.router.add_post("/v2/models/tabular/infer", infer)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession() as session:
                load = Load(session, f"http://127.0.0.1:{port}/v2/models/tabular/infer", rate=400.0)
                await load.run(request_bodies(10, seed=1), 40)
                return load
        finally:
            await runner.cleanup()

    load = asyncio.run(scenario())
    assert (load.sent, load.answered, load.failed) == (40, 39, 1)
    assert load.by_version == {"1": 30, "2": 9}
    assert load.last_error == '503 {"error": "overloaded"}'
    assert load.split() == "version 1: 77%, version 2: 23%"
    assert load.progress().startswith("[" + "#" * 24 + "] 40/40 requests sent")
