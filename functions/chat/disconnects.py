"""Noticing that a visitor left while their answer is being prepared, so Ollama can be told at once.

While tokens stream, a write to a closed connection fails by itself. The quiet stretches are the
problem: waiting for the first token (a model loading, a long prompt being read) and collecting a
non-streamed answer write nothing, and aiohttp does not cancel a handler whose client left. So one
watchdog task per chat instance looks at every watched connection each `tick` and cancels the handler
of any whose connection has closed: well under a microsecond per stream and tick (a timer per request
costs more).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web


class Watch:
    __slots__ = ("left", "task", "transport")

    def __init__(self, task: asyncio.Task[object], transport: asyncio.BaseTransport | None) -> None:
        self.task = task
        self.transport = transport  # the visitor's connection (None: already gone)
        self.left = False  # set just before the watchdog cancels `task`

    def owns(self, exc: BaseException) -> bool:
        """True if `exc` is the cancellation this watch caused; it is then taken back (`uncancel`)."""
        if self.left and isinstance(exc, asyncio.CancelledError):
            self.task.uncancel()
            return True
        return False


class Disconnects:
    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._watched: set[Watch] = set()
        self._watchdog: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, request: web.BaseRequest) -> Iterator[Watch]:
        """While in the block, the current task is cancelled if the request's client disconnects."""
        task = asyncio.current_task()
        assert task is not None
        watch = Watch(task, request.transport)
        self._watched.add(watch)
        if self._watchdog is None:
            self._watchdog = task.get_loop().create_task(self._run(), name="chat-disconnects")
        try:
            yield watch
        finally:
            self._watched.discard(watch)

    def __len__(self) -> int:
        return len(self._watched)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            for watch in [w for w in self._watched if w.transport is None or w.transport.is_closing()]:
                self._watched.discard(watch)
                watch.left = True
                watch.task.cancel()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
