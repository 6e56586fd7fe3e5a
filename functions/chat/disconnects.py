"""Noticing that a visitor left while their answer is being prepared, so Ollama can be told at once.

While tokens stream, a write to a closed connection fails by itself. The quiet stretches are the
problem: waiting for the first token (a model loading, a long prompt being read) and collecting a
non-streamed answer write nothing, and aiohttp does not cancel a handler whose client left. So one
watchdog task per chat instance looks at every watched connection each `tick` and cancels the handler
of any whose connection has closed: well under a microsecond per stream and tick (a timer per request
costs more).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web

from studio.runtime.watchdog import Watchdog, Watched


class Disconnects:
    def __init__(self, tick: float = 0.05) -> None:
        self._watchdog = Watchdog("chat-disconnects", tick)

    @contextlib.contextmanager
    def watch(self, request: web.BaseRequest) -> Iterator[Watched]:
        """While in the block, the current task is cancelled if the request's client disconnects."""
        transport = request.transport  # the visitor's connection (None: already gone)
        watched = self._watchdog.watch(lambda: transport is None or transport.is_closing())
        try:
            yield watched
        finally:
            self._watchdog.release(watched.task)

    def __len__(self) -> int:
        return len(self._watchdog)

    async def close(self) -> None:
        await self._watchdog.close()
