"""The operator's live tail (server-sent events of every event, filtered by type and correlation id)
and a purchase's timeline (its stored events, from the click to the install, by correlation id)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from events.bus import Bus
from events.envelope import Event
from events.tail import stored

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000
TIMELINE_TYPES = ("purchase.*", "payment.*", "install.*", "operator.*", "event.dead_lettered")


def sse(event: dict[str, Any]) -> bytes:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False)
class Tail:
    type_prefix: str
    correlation_id: str
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    backlog: list[dict[str, Any]] = field(default_factory=list)
    overflowed: bool = False

    def wants_dict(self, event: dict[str, Any]) -> bool:
        return event["type"].startswith(self.type_prefix) and (
            not self.correlation_id or event.get("correlationid") == self.correlation_id
        )


class LiveTails:
    def __init__(self) -> None:
        self.tails: set[Tail] = set()

    def offer(self, event: Event) -> None:
        if not self.tails:
            return
        doc = event.to_dict()
        for tail in list(self.tails):
            if tail.wants_dict(doc):
                try:
                    tail.queue.put_nowait(doc)
                except asyncio.QueueFull:
                    tail.overflowed = True

    async def relay(self, tail: Tail, response: web.StreamResponse) -> None:
        self.tails.add(tail)
        try:
            with contextlib.suppress(ConnectionResetError):
                while not tail.overflowed:
                    try:
                        item = await asyncio.wait_for(tail.queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        await response.write(b": keep-alive\n\n")
                        continue
                    if item is None:
                        return
                    await response.write(sse(item))
                await response.write(b'event: resync\ndata: {"reason": "too many events; reconnect"}\n\n')
        finally:
            self.tails.discard(tail)

    def close(self) -> None:
        for tail in self.tails:
            with contextlib.suppress(asyncio.QueueFull):
                tail.queue.put_nowait(None)


async def timeline(bus: Bus, *, purchase_id: str = "", correlation_id: str = "") -> list[Event]:
    """The stored events of a purchase (found by its id, then everything sharing its correlation ids)."""
    events = await stored(bus, list(TIMELINE_TYPES))
    wanted = {correlation_id} if correlation_id else set()
    if purchase_id:
        wanted |= {e.correlationid for e in events if e.data.get("purchase_id") == purchase_id and e.correlationid}
    return [
        e
        for e in events
        if (e.correlationid and e.correlationid in wanted) or (purchase_id and e.data.get("purchase_id") == purchase_id)
    ]
