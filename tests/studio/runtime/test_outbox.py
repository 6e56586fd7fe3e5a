"""The outbox relay with several studios on one database: each row is published by one of them."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    await bus.flush()
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


@asynccontextmanager
async def one_studio(
    db_target: Path | DatabaseUrl, nats_server: NatsServer, bus: Bus, name: str
) -> AsyncIterator[tuple[Recorder, Database, Bus]]:
    """What the bus hears, and a studio's migrated database and its own bus, closed at the end."""
    seen = Recorder()
    await bus.listen(SampleRecorded.TYPE, seen)
    await bus.flush()
    db = Database(db_target)
    relay_bus = Bus(nats_server.url, name=name, source="/tests")
    try:
        await db.open()
        await relay_bus.connect()
        await db.migrate([RUNTIME_MIGRATIONS])
        yield seen, db, relay_bus
    finally:
        await relay_bus.close(1)
        await db.close()


async def test_a_studio_publishes_its_own_rows_and_adopts_those_of_one_that_died_when_their_lease_lapses(
    db_target: Path | DatabaseUrl, nats_server: NatsServer, bus: Bus
) -> None:
    async with one_studio(db_target, nats_server, bus, "alive") as (seen, db, relay_bus):
        alive = OutboxRelay(db, relay_bus, owner="alive", adopt_every_s=0)  # (looks for orphans at every flush)
        for owner, n in (("died", 1), ("died", 2), (None, 3)):  # two of a studio now gone, one of a CLI command
            db.outbox_owner = owner
            async with db.transaction() as tx:
                data = SampleRecorded(n=n)
                await tx.publish(Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=str(n)))
        db.outbox_owner = "alive"  # as `start()` sets it
        async with db.transaction() as tx:
            data = SampleRecorded(n=4)
            await tx.publish(Event(type=data.TYPE, source="/tests", data=data.to_data(), subject="4"))

        assert await alive.flush() == 2  # its own row, and the one nobody owns; the dead studio's lease runs
        await db.execute("UPDATE outbox SET claimed_until = ? WHERE claimed_by = 'died'", ("2000-01-01T00:00:00.000Z",))
        assert await alive.flush() == 2  # the lease lapsed: adopted
        assert await alive.flush() == 0
        await eventually(lambda: len(seen) == 4, message="every event on the bus")
    assert sorted(e.data["n"] for e in seen.items) == [1, 2, 3, 4]
    assert await unpublished_after(db_target) == 0


async def test_a_backlog_nobody_owns_is_published_batch_after_batch_without_waiting_between_them(
    db_target: Path | DatabaseUrl, nats_server: NatsServer, bus: Bus
) -> None:
    async with one_studio(db_target, nats_server, bus, "survivor") as (seen, db, relay_bus):
        relay = OutboxRelay(db, relay_bus, owner="survivor", adopt_every_s=3600)  # one look an hour when idle
        async with db.transaction() as tx:  # 350 rows of a process without a relay (or one that died)
            for n in range(350):
                data = SampleRecorded(n=n)
                await tx.publish(Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=str(n)))
        relay.start()
        try:
            await eventually(lambda: _is(unpublished(db), 0), message="the whole backlog adopted and published")
        finally:
            await relay.stop()
    await eventually(lambda: len(seen) == 350, message="every event on the bus")


async def unpublished_after(db_target: Path | DatabaseUrl) -> int:
    db = Database(db_target)
    await db.open()
    try:
        return await unpublished(db)
    finally:
        await db.close()
