"""`GET /api/events`: the visitor's purchase and install events, live, as server-sent events.

One NATS subscription per gateway fans out to every connected browser. A visitor sees their own
purchases and the install events of the models they own; the operator sees all of them. A stream
starts with `event: state` (the `models.snapshot` query: every model with `owned`, from purchase, and
its install state, which purchase asks of install, its one owner). The subscriber is registered before
that query, and install writes each state in the transaction that publishes its event, so nothing
falls between the state and the events after it: a reload or a reconnect never loses progress, and
the browser needs no polling. The operator's catalog changes reach everyone as `event: catalog`
(`{"model", "change"}` only: who changed it stays the operator's business), so an open marketplace shows
a new price without a reload. A keep-alive comment every 15 s keeps proxies from closing an idle
stream. A browser too slow to keep up gets `event: resync` and its stream is closed; EventSource
reconnects and starts again from the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from events.bus import Bus, BusUnavailable
from events.catalog import OperatorCatalogChanged
from events.envelope import Event
from studio.runtime.errors import Unauthorized, UpstreamUnavailable
from studio.runtime.identity import Identity, identity
from studio.runtime.shortages import SHORTAGES

KEEPALIVE_S = 15.0
CATALOG_CHANGED = OperatorCatalogChanged.TYPE
QUEUE_SIZE = 512
_CLOSE = object()


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Subscriber:
    def __init__(self, who: Identity) -> None:
        self.who = who
        self.owned: set[str] = set()
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False

    def wants(self, event: Event) -> bool:
        data = event.data
        if event.type == CATALOG_CHANGED:
            return True  # the catalog is public
        if event.type.startswith("purchase."):
            if not self.who.admin and data.get("user_id") != self.who.user_id:
                return False
            if data.get("user_id") == self.who.user_id:
                if event.type in ("purchase.completed", "purchase.restored", "purchase.transferred"):
                    self.owned.add(data.get("model", ""))
                elif event.type in ("purchase.revoked", "purchase.suspended"):
                    self.owned.discard(data.get("model", ""))
            return True
        return self.who.admin or data.get("model") in self.owned

    def offer(self, item: Any) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class LiveFeed:
    def __init__(self, bus: Bus, *, max_streams: int = 1 << 16) -> None:
        self.bus = bus
        self.max_streams = max_streams  # each stream holds a file handle: never let them take the last ones
        self.subscribers: set[Subscriber] = set()

    async def start(self) -> None:
        for pattern in ("purchase.*", "install.*", CATALOG_CHANGED):
            await self.bus.listen(pattern, self._dispatch)

    async def _dispatch(self, event: Event) -> None:
        for sub in list(self.subscribers):
            if sub.wants(event):
                sub.offer(event)

    async def close(self) -> None:
        """Shutdown: end every stream now instead of waiting for browsers to leave."""
        for sub in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(_CLOSE)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        who = identity(request)
        if not who.user_id and not who.admin:
            raise Unauthorized("no visitor session; load the site first to get one", code="no_session")
        if len(self.subscribers) >= self.max_streams:
            SHORTAGES.report(
                "live_streams_full",
                f"{len(self.subscribers)} live streams are open, the most this process keeps "
                "(STUDIO_LIVE_STREAMS_MAX, or derived from the open-files limit); new ones get 503",
            )
            raise UpstreamUnavailable(
                "too many live streams are open on this server right now; the page keeps working and retries",
                code="live_streams_full",
                headers={"Retry-After": "30"},
            )
        sub = Subscriber(who)
        self.subscribers.add(sub)  # before the snapshot, so nothing falls between the two
        try:
            try:
                state = await self.bus.query(
                    "models.snapshot", {"user_id": who.user_id, "admin": who.admin}, timeout=3.0
                )
            except BusUnavailable:
                raise UpstreamUnavailable(
                    "live updates are unavailable right now; the page will retry",
                    code="live_unavailable",
                    headers={"Retry-After": "3"},
                ) from None
            sub.owned.update(m["id"] for m in state["models"] if m.get("owned"))
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
            await response.prepare(request)
            await response.write(b"retry: 3000\n\n" + sse("state", state))
            await self._relay(sub, response)
            return response
        finally:
            self.subscribers.discard(sub)
            if len(self.subscribers) < self.max_streams * 0.9:
                SHORTAGES.recovered("live_streams_full", f"{len(self.subscribers)} live streams open: room again")

    async def _relay(self, sub: Subscriber, response: web.StreamResponse) -> None:
        with contextlib.suppress(ConnectionResetError):
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if item is _CLOSE:
                    return
                if item.type == CATALOG_CHANGED:
                    change = {"model": item.data.get("model"), "change": item.data.get("change")}
                    await response.write(sse("catalog", change, item.id))
                else:
                    await response.write(sse(item.type, item.to_dict(), item.id))
                if sub.overflowed and sub.queue.empty():
                    await response.write(sse("resync", {"reason": "too many events; reconnecting"}))
                    return
