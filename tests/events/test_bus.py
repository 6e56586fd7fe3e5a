"""The bus, on a real nats-server with JetStream and on the in-memory bus (events/memory.py) alike:
delivery, dedupe, the ack policy, fan-out. Each test runs on both (`transport`, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from events.bus import Bus, BusUnavailable, ConsumerLag
from events.catalog import EventDeadLettered
from events.delivery import Backoff, Delivery, Reject
from events.envelope import Event, nats_subject
from tests.support import Recorder, SampleRecorded, SampleTicked, eventually, simulate_work

FAST = Backoff(base=0.05, cap=0.5)

pytestmark = pytest.mark.parametrize("transport", ["nats", "memory"], indirect=True)


async def stored_messages(bus: Bus) -> int:
    return int((await bus.jetstream_info())["messages"])


def sample(n: int, note: str = "") -> Event:
    data = SampleRecorded(n=n, note=note)
    return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject)


async def test_published_event_reaches_durable_consumer_typed(bus: Bus) -> None:
    got = Recorder()
    await bus.consume("tests__round_trip", [SampleRecorded.TYPE], got)
    event = sample(1, "hello")

    await bus.publish(event)

    await eventually(lambda: len(got) == 1, message="delivery")
    assert got.items[0] == SampleRecorded(n=1, note="hello")


async def test_duplicate_publish_with_same_id_is_stored_and_delivered_once(bus: Bus) -> None:
    got = Recorder()
    await bus.consume("tests__dedupe", [SampleRecorded.TYPE], got)
    event = sample(7)

    await bus.publish(event)
    await bus.publish(event)  # a retried publish after a lost ack
    await bus.publish(sample(8))  # a marker that arrives after both

    await eventually(lambda: len(got) == 2, message="both distinct events")
    assert [item.n for item in got.items] == [7, 8]
    assert await stored_messages(bus) == 2


async def test_failing_handler_is_retried_with_backoff_then_dead_lettered(bus: Bus) -> None:
    attempts: list[tuple[int, float]] = []
    dead = Recorder()
    await bus.listen(EventDeadLettered.TYPE, dead)

    async def always_fails(event: SampleRecorded, delivery: Delivery) -> None:
        attempts.append((delivery.attempt, asyncio.get_running_loop().time()))
        raise RuntimeError("database is on fire")

    await bus.consume(
        "tests__always_fails", [SampleRecorded.TYPE], always_fails, max_attempts=4, backoff=Backoff(base=0.1, cap=2)
    )
    await bus.publish(sample(3))

    await eventually(lambda: len(dead) == 1, message="dead letter", timeout=15)
    assert [a for a, _ in attempts] == [1, 2, 3, 4]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.07 and gaps[2] > gaps[0], f"backoff should grow: {gaps}"
    letter = EventDeadLettered.from_event(dead.items[0])
    assert (letter.consumer, letter.attempts, letter.reason) == ("tests__always_fails", 4, "exhausted")
    assert "database is on fire" in letter.error


async def test_rejected_event_is_dead_lettered_at_once(bus: Bus) -> None:
    attempts = Recorder()
    dead = Recorder()
    await bus.listen(EventDeadLettered.TYPE, dead)

    async def rejects(event: SampleRecorded, delivery: Delivery) -> None:
        await attempts(event)
        raise Reject("model 'x' is not in the catalog")

    await bus.consume("tests__rejects", [SampleRecorded.TYPE], rejects, max_attempts=5, backoff=FAST)
    await bus.publish(sample(4))

    await eventually(lambda: len(dead) == 1, message="dead letter")
    letter = EventDeadLettered.from_event(dead.items[0])
    assert letter.reason == "rejected" and letter.attempts == 1
    assert len(attempts) == 1


async def test_malformed_message_is_dead_lettered_not_retried(bus: Bus) -> None:
    handled = Recorder()
    dead = Recorder()
    await bus.listen(EventDeadLettered.TYPE, dead)
    await bus.consume("tests__poison", [SampleRecorded.TYPE], handled, backoff=FAST)

    await bus.store(nats_subject(SampleRecorded.TYPE), b"{not json", msg_id="poison-1", timeout=5)
    bad_data = Event(type=SampleRecorded.TYPE, source="/tests", data={"n": "not a number"})
    await bus.publish(bad_data)

    await eventually(lambda: len(dead) == 2, message="two dead letters")
    assert len(handled) == 0
    assert {EventDeadLettered.from_event(e).reason for e in dead.items} == {"rejected"}


async def test_long_handler_keeps_its_lease(bus: Bus) -> None:
    deliveries: list[int] = []
    done = asyncio.Event()

    async def slow(event: SampleRecorded, delivery: Delivery) -> None:
        deliveries.append(delivery.attempt)
        await simulate_work(3.0)  # three times the ack wait
        done.set()

    await bus.consume("tests__slow", [SampleRecorded.TYPE], slow, ack_wait=1.0, max_concurrency=2)
    await bus.publish(sample(5))

    await asyncio.wait_for(done.wait(), 10)
    assert deliveries == [1], "the event must not be redelivered while its handler works"
    lags: list[ConsumerLag] = []

    async def acknowledged() -> bool:
        lags[:] = [lag for lag in await bus.consumer_lags() if lag.consumer == "tests__slow"]
        return lags[0].ack_pending == 0

    await eventually(acknowledged, message="the acknowledgement")
    assert lags[0].redelivered == 0


async def test_two_replicas_of_a_durable_consumer_share_the_work(bus: Bus) -> None:
    replica_b = Bus(bus.url, name="replica-b", source="/tests")
    await replica_b.connect()
    seen_a, seen_b = Recorder(), Recorder()

    async def a(event: SampleRecorded, delivery: Delivery) -> None:
        await simulate_work(0.01)
        await seen_a(event)

    async def b(event: SampleRecorded, delivery: Delivery) -> None:
        await simulate_work(0.01)
        await seen_b(event)

    try:
        await bus.consume("tests__shared", [SampleRecorded.TYPE], a)
        await replica_b.consume("tests__shared", [SampleRecorded.TYPE], b)
        await bus.publish_many(sample(n) for n in range(40))

        await eventually(lambda: len(seen_a) + len(seen_b) == 40, message="all 40 handled")
        numbers = sorted(e.n for e in seen_a.items + seen_b.items)
        assert numbers == list(range(40)), "each event handled exactly once"
        assert seen_a.items and seen_b.items, "both replicas took a share"
    finally:
        await replica_b.close(1)


async def test_broadcast_listeners_each_see_durable_and_live_events(bus: Bus) -> None:
    other = Bus(bus.url, name="observer-2", source="/tests")
    await other.connect()
    first, second = Recorder(), Recorder()
    try:
        await bus.listen("*", first)
        await other.listen("sample.*", second)
        await bus.flush()
        await other.flush()

        await bus.publish(sample(1))
        await bus.publish(Event(type=SampleTicked.TYPE, source="/tests", data={"n": 2}))

        for seen in (first, second):

            def has_both(s: Recorder = seen) -> bool:
                return {e.type for e in s.items} >= {"sample.recorded", "sample.ticked"}

            await eventually(has_both, message="both events at each observer")
    finally:
        await other.close(1)


async def test_live_events_are_not_stored(bus: Bus) -> None:
    await bus.publish(Event(type=SampleTicked.TYPE, source="/tests", data={"n": 1}))
    await bus.publish(sample(2))
    assert await stored_messages(bus) == 1


async def test_a_queue_group_of_listeners_sees_each_event_once(bus: Bus) -> None:
    other = Bus(bus.url, name="server-2", source="/tests")
    await other.connect()
    here, there, everyone = Recorder(), Recorder(), Recorder()
    try:
        await bus.listen("sample.*", here, queue="one_replica")
        await other.listen("sample.*", there, queue="one_replica")
        await other.listen("sample.*", everyone)
        await bus.flush()
        await other.flush()

        await bus.publish_many(Event(type=SampleTicked.TYPE, source="/tests", data={"n": n}) for n in range(30))

        await eventually(lambda: len(everyone) == 30 and len(here) + len(there) == 30, message="30 seen")
        assert sorted(e.data["n"] for e in here.items + there.items) == list(range(30)), "each once in the group"
    finally:
        await other.close(1)


async def test_a_query_is_answered_by_one_replica_and_fails_plainly_without_one(bus: Bus) -> None:
    asked: list[str] = []

    async def answer(payload: dict) -> dict:
        asked.append(payload["q"])
        if payload["q"] == "boom":
            raise ValueError("no such thing")
        return {"echo": payload["q"]}

    with pytest.raises(BusUnavailable, match=r"no answer to tests\.echo"):
        await bus.query("tests.echo", {"q": "anyone?"}, timeout=0.5)
    await bus.respond("tests.echo", answer)
    other = Bus(bus.url, name="asker", source="/tests")
    await other.connect()
    try:
        await other.flush()
        assert await other.query("tests.echo", {"q": "hi"}) == {"echo": "hi"}
        with pytest.raises(BusUnavailable, match=r"tests\.echo failed: ValueError: no such thing"):
            await other.query("tests.echo", {"q": "boom"})
    finally:
        await other.close(1)
    assert asked == ["hi", "boom"]


async def test_a_handler_that_outlives_its_lease_without_renewing_it_gets_the_event_again(bus: Bus) -> None:
    """What the lease is for: a replica that stops answering (here: a pull loop paused mid-handler, its
    lease not renewed) does not hold an event forever; the consumer delivers it again after ack_wait."""
    attempts: list[int] = []
    second = asyncio.Event()

    async def stalls_once(event: SampleRecorded, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt >= 2:
            second.set()

    consumer = await bus.consume("tests__stalls", [SampleRecorded.TYPE], stalls_once, ack_wait=1.0)
    await consumer.stop(0.1)  # this replica is gone before the event comes
    await bus._bind("tests__stalls", [nats_subject(SampleRecorded.TYPE)], ack_wait=1.0, max_deliver=7, in_flight=16)
    pull = await bus._pull("tests__stalls")
    await bus.publish(sample(9))
    (taken,) = await eventually(lambda: pull.fetch(batch=1, timeout=0.5), message="the first delivery")
    assert taken.metadata.num_delivered == 1  # taken, never acknowledged nor renewed

    await bus.consume("tests__stalls", [SampleRecorded.TYPE], stalls_once, ack_wait=1.0)
    await asyncio.wait_for(second.wait(), 10)
    assert attempts == [2]
    await pull.unsubscribe()
