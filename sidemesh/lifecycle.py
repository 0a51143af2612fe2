"""Start and stop through one ``AsyncExitStack``, shared by every server process.

A server's ``_start`` pushes each teardown onto ``self._stack`` as it starts a piece; a
failure half-way unwinds what was started, in reverse, and leaving the ``async with``
does the same.
"""

from __future__ import annotations

import contextlib

__all__ = ["StackLifecycle"]


class StackLifecycle:
    """Mixin: ``async with Server(...) as server`` runs ``await server._start()``."""

    _stack: contextlib.AsyncExitStack

    async def _start(self) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        self._stack = contextlib.AsyncExitStack()
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._stack.aclose()
