"""The outbox relay: moves events committed in the database to JetStream, at least once.

A state change and its event are committed in one transaction (`tx.publish`). The relay publishes
unpublished rows in order with `Nats-Msg-Id` = event id (so a re-publish after a crash is stored
once), then marks them published. While NATS is down, rows wait and the relay retries with backoff;
nothing is lost and nothing is published for a transaction that rolled back. Published rows are
pruned after `STUDIO_OUTBOX_KEEP_DAYS` (studio.runtime.retention).

Several studios on one database share the outbox: each relay claims a batch before publishing it
(`claimed_by`, `claimed_until`: a lease of `LEASE_S`), so each row is published by one of them. On
PostgreSQL the claim skips rows another relay is claiming at that instant (`FOR UPDATE SKIP LOCKED`);
SQLite's claims are serialised by its single writer. A relay that dies holding a claim leaves its rows
to the others once the lease lapses (the stream drops a re-publish of an id it has seen, for two
minutes). During a database outage the relay waits, counted once a minute, not a traceback a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from events.bus import Bus, BusUnavailable
from events.envelope import Event, InvalidEvent
from studio.runtime.database import Database, DatabaseUnavailable, utcnow
from studio.runtime.errors import report_database_down
from studio.runtime.shortages import SHORTAGES, is_disk_full

log = logging.getLogger("studio.outbox")

BATCH = 100
LEASE_S = 30.0  # a claimed batch is this relay's for so long (renewed by each claim)

_CLAIM = (  # the oldest unclaimed rows (or this relay's own, or those whose lease lapsed), one batch
    "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE seq IN (SELECT seq FROM outbox "
    "WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?) "
    "ORDER BY seq LIMIT ?{lock}) RETURNING seq, payload"
)


class OutboxRelay:
    def __init__(self, db: Database, bus: Bus, *, owner: str = "", poll_s: float = 1.0) -> None:
        self.db = db
        self.bus = bus
        self.owner = owner or "relay"
        self._claim = _CLAIM.format(lock=" FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else "")
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
                elif isinstance(exc, DatabaseUnavailable):
                    report_database_down(exc)
                else:
                    log.exception("outbox relay failed; retrying")
                await asyncio.sleep(1)

    async def flush(self) -> int:
        """Claim and publish one batch of pending events; returns how many were published."""
        if await self.db.fetch_one("SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT 1") is None:
            self.backlog = 0
            return 0  # (a read: an idle relay takes no writer lock)
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(self._claim, (self.owner, utcnow(LEASE_S), utcnow(), self.owner, BATCH))
        rows.sort(key=lambda r: int(r["seq"]))  # (RETURNING promises no order)
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
        await self.db.execute(
            f"UPDATE outbox SET published_at = ?, claimed_by = NULL, claimed_until = NULL WHERE seq IN ({marks})",
            (utcnow(), *seqs),
        )
        self.backlog = 0
        return len(rows)
