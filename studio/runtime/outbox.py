"""The outbox relay: moves events committed in the database to JetStream, at least once.

A state change and its event are committed in one transaction (`tx.publish`). The relay publishes
unpublished rows in order with `Nats-Msg-Id` = event id (so a re-publish after a crash is stored
once), then marks them published. While NATS is down, rows wait and the relay retries with backoff;
nothing is lost and nothing is published for a transaction that rolled back. Published rows are
pruned after `STUDIO_OUTBOX_KEEP_DAYS` (studio.runtime.retention).

Several studios on one database share the outbox, and each row is published by one of them: a row
belongs to the process whose transaction wrote it (`claimed_by`, with a lease of `LEASE_S`,
`claimed_until`, set by `tx.publish`), and each relay publishes its own rows, which costs no more than
one relay alone (a read, then the mark). Rows nobody owns (written by a process without a relay, such
as a CLI command) or whose owner's lease lapsed (it died, or has not reached NATS for `LEASE_S`) are
adopted by whichever relay claims them first: one `UPDATE ... RETURNING`, which on PostgreSQL skips the
rows another relay is claiming at that instant (`FOR UPDATE SKIP LOCKED`) and on SQLite is serialised
by its single writer. A row published twice after all (its owner slow, not dead) is dropped by the
stream, by event id, within its ten-minute duplicate window. During a database outage the relay waits,
counted once a minute, not a traceback a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from events.bus import Bus, BusUnavailable
from events.envelope import Event, InvalidEvent
from studio.runtime.database import Database, DatabaseUnavailable, Row, utcnow
from studio.runtime.errors import report_database_down
from studio.runtime.shortages import SHORTAGES, is_disk_full
from studio.runtime.sql import OUTBOX_LEASE_S

log = logging.getLogger("studio.outbox")

BATCH = 100
LEASE_S = OUTBOX_LEASE_S  # a row is its writer's to publish for so long; then anyone's
ADOPT_EVERY_S = 1.0  # how often a relay looks for rows nobody publishes (at once again after a full batch)
# The longest wait between tries while NATS refuses: each relay publishes only its own rows, so its
# studio's events wait out its own backoff (a stream leader lost in a cluster: about 5 s).
RETRY_MAX_S = 5.0

_MINE = "SELECT seq, payload FROM outbox WHERE published_at IS NULL AND claimed_by = ? ORDER BY seq LIMIT ?"
_ORPHANED = "published_at IS NULL AND (claimed_until IS NULL OR claimed_until < ?){types}"
_ADOPT = (  # the oldest rows nobody owns now, one batch
    f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE seq IN (SELECT seq FROM outbox WHERE {_ORPHANED} "
    "ORDER BY seq LIMIT ?{lock}) RETURNING seq, payload"
)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        owner: str = "",
        types: frozenset[str] | None = None,
        poll_s: float = 1.0,
        adopt_every_s: float = ADOPT_EVERY_S,
    ) -> None:
        """`types`: adopt only orphaned rows of these event types (the ones this process's NATS user may
        publish: with a function per process sharing one database, another's rows are not ours to send);
        None: any. Its own rows are always of its own types."""
        self.db = db
        self.bus = bus
        self.owner = owner or "relay"
        self.types = () if types is None else tuple(sorted(types))
        only = f" AND event_type IN ({', '.join('?' * len(self.types))})" if self.types else ""
        self._orphaned = _ORPHANED.replace("{types}", only)
        self._adopt = _ADOPT.replace("{types}", only).replace(
            "{lock}", " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
        )
        self.adopt_every_s = adopt_every_s
        self._adopt_after = 0.0
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.backlog = 0

    def start(self) -> None:
        self.db.outbox_owner = self.owner  # rows this process writes are this relay's to publish
        self.db.on_events_committed.append(self._on_commit)
        self._wake.set()  # a backlog from before this start (a restart, a CLI command) goes now, not at the first poll
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
                delay = min(RETRY_MAX_S, 0.25 * 2 ** min(failures, 6))
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
        """Publish one batch of pending events (this relay's own, else those nobody publishes); returns
        how many were published."""
        rows = await self.db.fetch_all(_MINE, (self.owner, BATCH))
        now = asyncio.get_running_loop().time()
        if len(rows) < BATCH and now >= self._adopt_after:
            most = BATCH - len(rows)
            adopted = await self._adopt_orphans(most)
            # The look is throttled while there is nothing to adopt; a full batch adopted says more may wait (a
            # dead studio's backlog, a CLI command's rows): the next flush looks again at once, not in a second.
            self._adopt_after = now if len(adopted) == most else now + self.adopt_every_s
            rows += adopted
        self.backlog = len(rows)
        if not rows:
            return 0
        rows.sort(key=lambda r: int(r["seq"]))
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

    async def _adopt_orphans(self, most: int) -> list[Row]:
        """Claim up to `most` rows nobody owns now (a read first: usually there are none)."""
        now = utcnow()
        if await self.db.fetch_one(f"SELECT 1 FROM outbox WHERE {self._orphaned} LIMIT 1", (now, *self.types)) is None:
            return []
        async with self.db.transaction() as tx:
            return await tx.fetch_all(self._adopt, (self.owner, utcnow(LEASE_S), now, *self.types, most))
