"""The outbox relay with several studios on one database: each row is published by one of them."""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

from events.bus import Bus
from events.envelope import Event
from events.server import NatsServer
from studio.runtime.database import RUNTIME_MIGRATIONS, Database
from studio.runtime.dialect import DatabaseUrl
from studio.runtime.outbox import OutboxRelay
from tests.support import Recorder, SampleRecorded, eventually

ROWS = 1000


async def unpublished(db: Database) -> int:
    row = await db.fetch_one("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
    return int(row[0]) if row else -1


async def test_three_relays_on_one_database_publish_each_row_once(
    db_target: Path | DatabaseUrl, nats_server: NatsServer, bus: Bus, caplog
) -> None:
    seen = Recorder()
    await bus.listen(SampleRecorded.TYPE, seen)  # sees every publish, duplicates the stream drops included
    await bus.nc.flush()
    dbs = [Database(db_target) for _ in range(3)]
    buses = [Bus(nats_server.url, name=f"studio-{i}", source="/tests") for i in range(3)]
    relays: list[OutboxRelay] = []
    try:
        for db, b in zip(dbs, buses, strict=True):
            await db.open()
            await b.connect()
        await dbs[0].migrate([RUNTIME_MIGRATIONS])
        for start in range(0, ROWS, 250):
            async with dbs[0].transaction() as tx:
                for n in range(start, start + 250):
                    data = SampleRecorded(n=n)
                    await tx.publish(Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=str(n)))
        caplog.set_level(logging.WARNING)

        relays = [OutboxRelay(db, b, owner=f"studio-{i}") for i, (db, b) in enumerate(zip(dbs, buses, strict=True))]
        for relay in relays:  # all at once, over the same backlog
            relay.start()
        await eventually(lambda: _is(unpublished(dbs[0]), 0), timeout=60, message="the outbox to drain")
        await eventually(lambda: len(seen) >= ROWS, message="every event on the bus")
    finally:
        await asyncio.gather(*(relay.stop() for relay in relays))
        for b in buses:
            await b.close(1)
        for db in dbs:
            await db.close()

    per_event = collections.Counter(e.id for e in seen.items)
    assert len(per_event) == ROWS
    twice = {event_id: n for event_id, n in per_event.items() if n > 1}
    assert not twice, f"{len(twice)} events published more than once"
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("studio")]  # no error lines


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected
