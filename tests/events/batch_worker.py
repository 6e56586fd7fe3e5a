"""A process that consumes sample events in batches into SQLite and, on request, dies mid-batch.

python -m tests.events.batch_worker NATS_URL DB_PATH CONSUMER --crash-after N

Each batch is written in one transaction (one row per event, no uniqueness: a second application
would show as a duplicate). With --crash-after N the process exits hard after writing N rows of its
first batch, before the commit and before any acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from events.bus import Bus
from events.delivery import Delivery
from studio.runtime.database import Database
from tests.support import SampleRecorded

CREATE = "CREATE TABLE IF NOT EXISTS applied (n INTEGER NOT NULL, attempt INTEGER NOT NULL)"


async def apply_batch(db: Database, deliveries: list[Delivery], crash_after: int | None) -> None:
    async with db.transaction() as tx:
        for i, d in enumerate(deliveries):
            if crash_after is not None and i == crash_after:
                os._exit(3)  # a crash: no rollback by us, no ack, no goodbye
            await tx.execute("INSERT INTO applied (n, attempt) VALUES (?, ?)", (d.data.n, d.attempt))


async def main(url: str, db_path: Path, consumer: str, crash_after: int | None) -> None:
    db = Database(db_path)
    await db.open()
    await db.execute(CREATE)
    bus = Bus(url, name="batch-worker", source="/tests")
    await bus.connect()

    async def handler(deliveries: list[Delivery]) -> None:
        await apply_batch(db, deliveries, crash_after)

    await bus.consume(consumer, [SampleRecorded.TYPE], handler, batch_size=256, ack_wait=1.0)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("db", type=Path)
    p.add_argument("consumer")
    p.add_argument("--crash-after", type=int, default=None)
    a = p.parse_args()
    asyncio.run(main(a.url, a.db, a.consumer, a.crash_after))
