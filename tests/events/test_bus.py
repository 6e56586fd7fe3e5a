"""The bus against a real nats-server with JetStream: delivery, dedupe, the ack policy, fan-out."""

from __future__ import annotations

import asyncio
import itertools

from events.bus import STREAM, Bus
from events.catalog import EventDeadLettered
from events.delivery import Backoff, Delivery, Reject
from events.envelope import Event, nats_subject
from tests.support import Recorder, SampleRecorded, SampleTicked, eventually, simulate_work

FAST = Backoff(base=0.05, cap=0.5)


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
    info = await bus.nc.jsm().stream_info(STREAM)
    assert info.state.messages == 2


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

    js = bus.nc.jetstream()
    await js.publish(nats_subject(SampleRecorded.TYPE), b"{not json", headers={"Nats-Msg-Id": "poison-1"})
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
    info = await bus.nc.jsm().consumer_info(STREAM, "tests__slow")
    assert info.num_redelivered == 0


async def test_two_replicas_of_a_durable_consumer_share_the_work(bus: Bus, nats_server) -> None:
    replica_b = Bus(nats_server.url, name="replica-b", source="/tests")
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


async def test_broadcast_listeners_each_see_durable_and_live_events(bus: Bus, nats_server) -> None:
    other = Bus(nats_server.url, name="observer-2", source="/tests")
    await other.connect()
    first, second = Recorder(), Recorder()
    try:
        await bus.listen("*", first)
        await other.listen("sample.*", second)
        await bus.nc.flush()
        await other.nc.flush()

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
    info = await bus.nc.jsm().stream_info(STREAM)
    assert info.state.messages == 1
