"""Batch consumers against a real nats-server: a batch in one call, acked after it; a poison event
does not hold the others back; a crash mid-batch loses nothing and applies nothing twice; lag is visible."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from events.bus import STREAM, Bus, BusUnavailable
from events.catalog import EventDeadLettered
from events.delivery import Backoff, Delivery, Reject
from events.envelope import Event, nats_subject
from events.lag import consumer_lags, table
from studio.runtime.database import Database
from tests.events.batch_worker import CREATE
from tests.support import Recorder, SampleRecorded, eventually

FAST = Backoff(base=0.05, cap=0.5)
ROOT = Path(__file__).resolve().parents[2]


def sample(n: int, note: str = "") -> Event:
    data = SampleRecorded(n=n, note=note)
    return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject)


class Projection:
    """A batch handler that applies a batch all or nothing, and remembers what it applied."""

    def __init__(self, poison: set[int] | None = None) -> None:
        self.applied: list[int] = []
        self.batches: list[int] = []
        self.attempts: dict[int, list[int]] = {}
        self.poison = poison or set()

    async def __call__(self, deliveries: list[Delivery]) -> None:
        self.batches.append(len(deliveries))
        for d in deliveries:
            self.attempts.setdefault(d.data.n, []).append(d.attempt)
        bad = [d.data.n for d in deliveries if d.data.n in self.poison]
        if bad:
            raise Reject(f"event {bad[0]} names nothing this projection knows")
        self.applied.extend(d.data.n for d in deliveries)


@pytest.mark.parametrize("transport", ["nats", "memory"], indirect=True)
async def test_waiting_events_come_as_one_batch_and_are_acked_after_it(bus: Bus) -> None:
    await bus.publish_many([sample(n) for n in range(300)])
    projection = Projection()

    await bus.consume("tests__batched", [SampleRecorded.TYPE], projection, batch_size=256)

    await eventually(lambda: len(projection.applied) == 300, message="all applied")
    assert projection.batches[0] == 256 and sum(projection.batches) == 300
    assert sorted(projection.applied) == list(range(300))
    lag = await eventually(lambda: _lag_of(bus, "tests__batched", lambda x: x.ack_pending == 0), message="all acked")
    assert lag.redelivered == 0 and lag.pending == 0


async def _settled(bus: Bus, name: str):
    info = await bus.nc.jsm().consumer_info(STREAM, name)
    return info if info.num_pending == 0 and info.num_ack_pending == 0 else None


async def test_one_malformed_and_one_poison_event_among_good_ones(bus: Bus) -> None:
    dead = Recorder()
    await bus.listen(EventDeadLettered.TYPE, dead)
    js = bus.nc.jetstream()
    await bus.publish_many([sample(n) for n in range(50)])
    await js.publish(nats_subject(SampleRecorded.TYPE), b"{not json", headers={"Nats-Msg-Id": "malformed-1"})
    await bus.publish_many([sample(n) for n in range(50, 99)])
    projection = Projection()

    await bus.consume("tests__one_malformed", [SampleRecorded.TYPE], projection, batch_size=256, backoff=FAST)

    await eventually(lambda: len(projection.applied) == 99 and len(dead) == 1, message="99 applied, 1 dead")
    assert sorted(projection.applied) == list(range(99)), "each good event applied once"
    assert projection.batches == [99], "the malformed one never reached the handler"
    assert EventDeadLettered.from_event(dead.items[0]).reason == "rejected"
    info = await eventually(lambda: _settled(bus, "tests__one_malformed"), message="all settled")
    assert info.num_redelivered == 0

    # A well-formed event the projection rejects fails its batch: the batch is handled one by one.
    poisoned = Projection(poison={42})
    await bus.consume("tests__one_poison", [SampleRecorded.TYPE], poisoned, batch_size=256, backoff=FAST)
    await eventually(lambda: len(poisoned.applied) == 98 and len(dead) == 3, message="98 applied, poison dead")
    assert sorted(poisoned.applied) == [n for n in range(99) if n != 42]
    assert all(attempts == [1, 1] for attempts in poisoned.attempts.values()), "nothing redelivered"
    letters = [EventDeadLettered.from_event(e) for e in dead.items]
    assert (
        [(x.consumer, x.reason, x.attempts) for x in letters[1:]]
        == [
            ("tests__one_poison", "rejected", 1),
            ("tests__one_poison", "rejected", 1),  # the malformed message, rejected at once here too
        ]
        or sorted(x.consumer for x in letters[1:]) == ["tests__one_poison", "tests__one_poison"]
    )
    info = await eventually(lambda: _settled(bus, "tests__one_poison"), message="all settled")
    assert info.num_redelivered == 0


async def test_a_crash_mid_batch_loses_nothing_and_applies_nothing_twice(bus: Bus, nats_server, tmp_path) -> None:
    db_path = tmp_path / "projection.db"
    await bus.publish_many([sample(n) for n in range(120)])

    worker = [sys.executable, "-m", "tests.events.batch_worker", nats_server.url, str(db_path), "tests__crashy"]
    crashing = await asyncio.create_subprocess_exec(
        *worker, "--crash-after", "60", cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(crashing.communicate(), 30)
    assert crashing.returncode == 3, stderr.decode()[-2000:]

    db = Database(db_path)
    await db.open()
    try:
        await db.execute(CREATE)
        row = await db.fetch_one("SELECT COUNT(*) FROM applied")
        assert row is not None and row[0] == 0, "the half-written batch rolled back"

        replacement = await asyncio.create_subprocess_exec(*worker, cwd=ROOT)
        try:
            rows = await eventually(
                lambda: _rows(db, 120), timeout=20, message="the unacknowledged events applied after the crash"
            )
        finally:
            replacement.terminate()
            await asyncio.wait_for(replacement.wait(), 10)
        assert sorted(n for n, _ in rows) == list(range(120)), "each event applied exactly once"
        assert {attempt for _, attempt in rows} == {2}, "they came back after the crash"
    finally:
        await db.close()


async def _rows(db: Database, count: int):
    rows = await db.fetch_all("SELECT n, attempt FROM applied")
    return [tuple(r) for r in rows] if len(rows) >= count else None


@pytest.mark.parametrize("transport", ["nats", "memory"], indirect=True)
async def test_a_paused_consumer_shows_its_backlog_and_catches_up(bus: Bus) -> None:
    projection = Projection()
    consumer = await bus.consume("tests__paused", [SampleRecorded.TYPE], projection, batch_size=256)
    consumer.pause()
    await bus.publish_many([sample(n) for n in range(40)])

    lag = await eventually(lambda: _lag_of(bus, "tests__paused", lambda x: x.oldest_pending_s >= 0.3), message="lag")
    assert lag.pending == 40 and lag.ack_pending == 0 and projection.applied == []
    printed = table(await consumer_lags(bus))
    assert "tests__paused" in printed and " 40 " in printed and "oldest pending" in printed

    consumer.resume()
    await eventually(lambda: len(projection.applied) == 40, message="caught up")
    caught_up = await eventually(lambda: _lag_of(bus, "tests__paused", lambda x: x.pending + x.ack_pending == 0))
    assert caught_up.oldest_pending_s == 0 and caught_up.last_active_s is not None


async def _lag_of(bus: Bus, name: str, condition):
    for lag in await consumer_lags(bus):
        if lag.consumer == name and condition(lag):
            return lag
    return None


async def test_a_changed_consumer_config_is_applied_to_the_existing_durable(bus: Bus) -> None:
    first = await bus.consume("tests__resized", [SampleRecorded.TYPE], Recorder(), max_concurrency=1)
    await first.stop(1)

    await bus.consume("tests__resized", [SampleRecorded.TYPE], Projection(), batch_size=128)

    info = await bus.nc.jsm().consumer_info(STREAM, "tests__resized")
    assert info.config.max_ack_pending == 256


@pytest.mark.parametrize("transport", ["nats"], indirect=True)
async def test_a_batch_published_together_is_stored_once_and_refused_whole_without_a_stream(bus: Bus) -> None:
    """publish_many's acknowledgements come to one inbox: every event stored, a second publish of the same
    ids dropped by the stream, and with no stream to take them the lot fails (the outbox keeps them)."""
    events = [sample(n) for n in range(60)]
    await bus.publish_many(events)
    await bus.publish_many(events)  # the outbox publishing again after a failure: stored once
    info = await bus.nc.jsm().stream_info(STREAM)
    assert info.state.messages == 60
    await bus.nc.jsm().delete_stream(STREAM)
    with pytest.raises(BusUnavailable, match="could not publish 2 events"):
        await bus.publish_many([sample(100), sample(101)], timeout=5)
