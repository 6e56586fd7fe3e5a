"""Pruning: data that grows only with what matters.

Published outbox rows (JetStream has the events; the outbox only has to hold what is not published
yet) and rows a function declares with `function.retain(...)` (the webhook's processed Stripe event
ids, kept while Stripe may still retry: 3 days) are deleted once older than `STUDIO_OUTBOX_KEEP_DAYS`.

The host prunes at start-up and every hour, in small batches (`BATCH` rows per short transaction,
a pause between them), so the writer is never held for long and requests go on. Unpublished outbox
rows are never touched (`published_at < cutoff` is false for NULL). A backup taken meanwhile is a
consistent copy as of one instant either way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from studio.runtime.database import Database, DatabaseUnavailable
from studio.runtime.errors import report_database_down

log = logging.getLogger("studio.retention")

BATCH = 500
PAUSE_S = 0.02
EVERY_S = 3600.0


@dataclass(frozen=True)
class Retention:
    """Rows of `table` whose `time_column` (ISO-8601 UTC text) is older than the window go, by `key`."""

    table: str
    time_column: str
    key: str


OUTBOX = Retention("outbox", "published_at", "seq")


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Pruner:
    def __init__(self, db: Database, retentions: list[Retention], keep_s: float, *, batch: int = BATCH) -> None:
        self.db = db
        self.retentions = retentions
        self.keep_s = keep_s
        self.batch = batch
        self.pruned: dict[str, int] = {}

    async def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than the window; returns the rows deleted per table."""
        cutoff = iso((now or datetime.now(UTC)) - timedelta(seconds=self.keep_s))
        deleted: dict[str, int] = {}
        for r in self.retentions:
            total = 0
            while True:
                n = await self.db.execute(
                    f"DELETE FROM {r.table} WHERE {r.key} IN "
                    f"(SELECT {r.key} FROM {r.table} WHERE {r.time_column} < ? ORDER BY {r.time_column} LIMIT ?)",
                    (cutoff, self.batch),
                )
                total += n
                if n < self.batch:
                    break
                await asyncio.sleep(PAUSE_S)  # the writer is free for requests between batches
            deleted[r.table] = total
            self.pruned[r.table] = self.pruned.get(r.table, 0) + total
        if any(deleted.values()):
            log.info("pruned old rows", extra={"deleted": deleted, "older_than": cutoff})
        return deleted

    async def run(self, every_s: float = EVERY_S) -> None:
        while True:
            try:
                await self.prune()
            except DatabaseUnavailable as exc:  # an outage: counted with the others, not a traceback
                report_database_down(exc)
            except Exception:
                log.exception("pruning failed; trying again later")
            await asyncio.sleep(every_s)
