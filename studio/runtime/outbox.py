"""The outbox relay: moves events committed in the database to JetStream, at least once.

A state change and its event are committed in one transaction (`tx.publish`). The relay publishes
unpublished rows in order with `Nats-Msg-Id` = event id (so a re-publish after a crash is stored
once), then marks them published. While NATS is down, rows wait and the relay retries with backoff;
nothing is lost and nothing is published for a transaction that rolled back. Published rows are
pruned after `STUDIO_OUTBOX_KEEP_DAYS` (studio.runtime.retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from events.bus import Bus, BusUnavailable
from events.envelope import Event, InvalidEvent
from studio.runtime.database import Database, utcnow
from studio.runtime.shortages import SHORTAGES, is_disk_full

log = logging.getLogger("studio.outbox")

BATCH = 100


class OutboxRelay:
    def __init__(self, db: Database, bus: Bus, *, poll_s: float = 1.0, types: frozenset[str] | None = None) -> None:
        """`types`: publish only rows of these event types (the ones this process's NATS user may publish:
        with a function per process sharing one database, each relays its own); None: every row."""
        self.db = db
        self.bus = bus
        self.types = None if types is None else tuple(sorted(types))
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.backlog = 0

    def start(self) -> None:
        self.db.on_events_committed.append(self._on_commit)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def _on_commit(self, events: list[Event]) -> None:
        self._wake.set()

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.db.on_events_committed.remove(self._on_commit)
        if self._task is not None:
            # One last flush so events committed just before shutdown leave now, not at next start.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), timeout=3)

    async def _run(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
            self._wake.clear()
            try:
                while await self.flush() == BATCH:
                    pass
                failures = 0
            except BusUnavailable as exc:
                failures += 1
                delay = min(10.0, 0.25 * 2 ** min(failures, 6))
                log.warning(
                    "outbox waiting for NATS: %s (%d events pending)",
                    exc,
                    self.backlog,
                    extra={"retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)
                self._wake.set()
            except Exception as exc:
                if is_disk_full(exc):  # the events wait in the outbox; counted, not a traceback a second
                    SHORTAGES.report("disk_full", "the outbox cannot mark events published: the disk is full")
                else:
                    log.exception("outbox relay failed; retrying")
                await asyncio.sleep(1)

    async def flush(self) -> int:
        """Publish one batch of pending events; returns how many were published."""
        only = "" if self.types is None else f" AND event_type IN ({', '.join('?' * len(self.types))})"
        rows = await self.db.fetch_all(
            f"SELECT seq, payload FROM outbox WHERE published_at IS NULL{only} ORDER BY seq LIMIT ?",
            (*(self.types or ()), BATCH),
        )
        self.backlog = len(rows)
        if not rows:
            return 0
        events, seqs = [], []
        for row in rows:
            try:
                events.append(Event.from_json(row["payload"]))
            except InvalidEvent:
                log.error("dropping a malformed outbox row", extra={"seq": row["seq"]})
            seqs.append(row["seq"])
        await self.bus.publish_many(events)
        marks = ",".join("?" * len(seqs))
        await self.db.execute(f"UPDATE outbox SET published_at = ? WHERE seq IN ({marks})", (utcnow(), *seqs))
        self.backlog = 0
        return len(rows)
