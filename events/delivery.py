"""How an event is handed to a durable subscriber, and the one acknowledgement policy.

A handler returns normally: the message is acknowledged. It raises `Retry` (an expected, transient
failure) or any unexpected exception: the message is redelivered after a backoff, until its attempts
are used up, then dead-lettered. It raises `Reject`: the message can never succeed (poison), it is
terminated at once and dead-lettered. Handlers never ack by hand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from events.envelope import Event


class Counts(Protocol):
    @property
    def num_delivered(self) -> int: ...

    @property
    def num_pending(self) -> int: ...


class Pulled(Protocol):
    """One message pulled from a durable consumer: nats-py's JetStream `Msg`, or the in-memory bus's."""

    @property
    def data(self) -> bytes: ...

    @property
    def header(self) -> dict[str, str] | None: ...

    @property
    def metadata(self) -> Counts: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...


class Reject(Exception):
    """This event can never be handled (malformed, refers to nothing): do not retry it."""


class Retry(Exception):
    """A transient failure the handler expected: redeliver later (counts as an attempt)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: base * 2**(attempt-1), capped, +-20%."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int) -> float:
        raw: float = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        return raw * random.uniform(0.8, 1.2)


@dataclass(slots=True)
class Delivery:
    """One delivery of an event to a durable consumer (`data`: the event's typed data)."""

    event: Event
    consumer: str
    attempt: int
    max_attempts: int
    _msg: Pulled | None = field(default=None, repr=False)
    data: Any = None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    async def keep_alive(self) -> None:
        """Extend the lease now (the runtime also does this on a timer while the handler runs)."""
        if self._msg is not None:
            await self._msg.in_progress()
