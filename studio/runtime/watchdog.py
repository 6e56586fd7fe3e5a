"""One task that watches many: every `tick`, cancel each watched task whose condition has come true.

Used for the gateway's route deadlines, where a timer per request is a measurable share of the
request, and for the chat function noticing a visitor who left (a condition no timer can express).
The watched code catches the cancellation and asks `owns(exc)` whether it was this watchdog's doing.

Why not `asyncio.timeout` for the deadlines: tests/bench/deadline_bench.py times both around the
same handler, 50 requests in flight, on uvloop. Here (2 cores, shared, medians of 7 rounds):
asyncio.timeout adds 9.4 us per request, the watchdog 4.4 us. The 5 us saved is 4-12 % of an
embedded gateway request: ~40 us of CPU on an idle machine (25,000 req/s), ~115 us measured on the
loaded one. An A/B of the embedded gateway under wrk (the deadline swapped for asyncio.timeout,
tests/bench/serve.py, 6 runs of 4 s each way, server CPU time per request) agreed in direction:
119 vs 134 us median, too noisy that day for a firmer ratio. The price is a deadline that fires
up to `tick` (50 ms) late.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Watched:
    __slots__ = ("condition", "fired", "task")

    def __init__(self, task: asyncio.Task[object], condition: Callable[[], bool]) -> None:
        self.task = task
        self.condition = condition
        self.fired = False  # set just before the watchdog cancels `task`

    def owns(self, exc: BaseException) -> bool:
        """True if `exc` is the cancellation this watch caused; it is then taken back (`uncancel`)."""
        if self.fired and isinstance(exc, asyncio.CancelledError):
            self.task.uncancel()
            return True
        return False


class Watchdog:
    def __init__(self, name: str, tick: float = 0.05) -> None:
        self.name = name
        self.tick = tick
        self._watched: dict[asyncio.Task[object], Watched] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, condition: Callable[[], bool]) -> Watched:
        """Watch the current task: it is cancelled once `condition()` is true, until `release`."""
        task = asyncio.current_task()
        assert task is not None
        watched = self._watched[task] = Watched(task, condition)
        if self._task is None:
            self._task = task.get_loop().create_task(self._run(), name=self.name)
        return watched

    def release(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._watched.pop(task, None)

    def __len__(self) -> int:
        return len(self._watched)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            for task, watched in list(self._watched.items()):
                if watched.condition():
                    del self._watched[task]
                    watched.fired = True
                    task.cancel()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
