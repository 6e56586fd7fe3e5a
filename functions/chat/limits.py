"""Per-visitor limits on chat: answers generating at once, and chat requests started per minute.

In memory, per chat instance (one on a single VPS). The per-minute limit is a token bucket holding
STUDIO_CHAT_REQUESTS_PER_MINUTE requests, refilled evenly over a minute: a visitor may use the whole
minute's allowance at once, then one more every 60/N seconds. Refusals are 429s with `Retry-After`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from studio.runtime.errors import TooManyRequests

SWEEP_EVERY = 1024  # admissions between sweeps of idle visitors


@dataclass
class _Visitor:
    tokens: float
    updated: float
    generating: int = 0


class VisitorLimits:
    def __init__(self, *, concurrent: int, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.concurrent = concurrent
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # requests regained per second
        self.clock = clock
        self._visitors: dict[str, _Visitor] = {}
        self._admitted = 0

    @contextmanager
    def admit(self, user_id: str) -> Iterator[None]:
        """Hold one of the visitor's generation slots for the block, or raise TooManyRequests."""
        now = self.clock()
        v = self._visitors.get(user_id)
        if v is None:
            v = self._visitors[user_id] = _Visitor(tokens=float(self.per_minute), updated=now)
        else:
            v.tokens = min(float(self.per_minute), v.tokens + (now - v.updated) * self.rate)
            v.updated = now
        if v.generating >= self.concurrent:
            raise TooManyRequests(
                f"you already have {v.generating} answers being generated (the limit is {self.concurrent}); "
                "wait for one to finish or stop it",
                code="too_many_generations",
                headers={"Retry-After": "1"},
            )
        if v.tokens < 1:
            wait = math.ceil((1 - v.tokens) / self.rate)
            raise TooManyRequests(
                f"too many chat requests: at most {self.per_minute} a minute; try again in {wait} s",
                code="rate_limited",
                headers={"Retry-After": str(wait)},
            )
        v.tokens -= 1
        v.generating += 1
        self._admitted += 1
        if self._admitted % SWEEP_EVERY == 0:
            self._sweep(now)
        try:
            yield
        finally:
            v.generating -= 1

    def generating(self, user_id: str) -> int:
        v = self._visitors.get(user_id)
        return v.generating if v else 0

    def _sweep(self, now: float) -> None:
        """Forget visitors with nothing generating whose allowance has refilled (they are back to new)."""
        full_after = self.per_minute / self.rate
        for user_id, v in list(self._visitors.items()):
            if v.generating == 0 and now - v.updated >= full_after:
                del self._visitors[user_id]

    def __len__(self) -> int:
        return len(self._visitors)
