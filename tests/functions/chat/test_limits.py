"""Per-caller limits, shared by every chat replica through the database: answers at once, requests a minute
(a token bucket), tokens a day, with Retry-After; a refusal changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

from events.catalog import ChatCompleted
from events.envelope import Event
from functions import load
from functions.chat.limits import SharedLimits
from studio.runtime.database import RUNTIME_MIGRATIONS, Database
from studio.runtime.dialect import DatabaseUrl
from studio.runtime.errors import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(db_target: Path | DatabaseUrl):
    database = Database(db_target)
    await database.open()
    await database.migrate([RUNTIME_MIGRATIONS, load("chat").migrations or RUNTIME_MIGRATIONS])
    yield database
    await database.close()


async def admit_once(limits: SharedLimits, user_id: str) -> None:
    async with limits.admit(user_id):
        pass


async def test_a_minutes_allowance_may_be_used_at_once_then_it_refills_evenly(db) -> None:
    clock = Clock()
    limits = SharedLimits(db, concurrent=10, per_minute=6, clock=clock)  # one regained every 10 s
    for _ in range(6):
        await admit_once(limits, "v1")

    with pytest.raises(TooManyRequests) as caught:
        await admit_once(limits, "v1")
    assert caught.value.code == "rate_limited" and caught.value.headers["Retry-After"] == "10"

    clock.now += 4
    with pytest.raises(TooManyRequests) as caught:
        await admit_once(limits, "v1")
    assert caught.value.headers["Retry-After"] == "6"
    clock.now += 6
    await admit_once(limits, "v1")
    await admit_once(limits, "v2")  # another caller has their own allowance


async def test_answers_at_once_are_limited_and_a_slot_frees_when_the_answer_ends(db) -> None:
    limits = SharedLimits(db, concurrent=2, per_minute=100, clock=Clock())

    async with limits.admit("v1"), limits.admit("v1"):
        assert await limits.generating("v1") == 2
        with pytest.raises(TooManyRequests) as caught:
            await admit_once(limits, "v1")
        assert caught.value.code == "too_many_generations" and caught.value.headers["Retry-After"] == "1"
    assert await limits.generating("v1") == 0
    with pytest.raises(RuntimeError):
        async with limits.admit("v1"):
            raise RuntimeError("the answer failed")
    assert await limits.generating("v1") == 0, "a failed answer frees its slot too"


async def test_a_slot_held_by_a_replica_that_died_stops_counting(db) -> None:
    clock = Clock()
    limits = SharedLimits(db, concurrent=1, per_minute=100, clock=clock)
    await db.execute(
        "INSERT INTO chat_generating (answer_id, user_id, started_at) VALUES ('lost', 'v1', ?)", (clock.now,)
    )
    with pytest.raises(TooManyRequests):
        await admit_once(limits, "v1")

    clock.now += 1801
    await admit_once(limits, "v1")


async def answer_using(limits: SharedLimits, user_id: str, model: str, prompt: int, completion: int) -> None:
    async with limits.admit(user_id) as slot:
        slot.model, slot.prompt_tokens, slot.completion_tokens = model, prompt, completion


async def test_tokens_a_day_are_counted_as_answers_end_and_limited_until_midnight_utc(db) -> None:
    clock = Clock()
    limits = SharedLimits(db, concurrent=2, per_minute=100, tokens_per_day=100, clock=clock)
    await answer_using(limits, "v1", "tinyllama:latest", 30, 69)
    await answer_using(limits, "v1", "tinyllama:latest", 0, 0)  # an answer that used nothing counts nothing
    await answer_using(limits, "v1", "llama3.2:3b", 0, 1)
    rows = await db.fetch_all("SELECT model, prompt_tokens, completion_tokens, answers FROM chat_usage ORDER BY model")
    assert [tuple(r) for r in rows] == [("llama3.2:3b", 0, 1, 1), ("tinyllama:latest", 30, 69, 1)]

    with pytest.raises(TooManyRequests) as caught:
        await admit_once(limits, "v1")
    assert caught.value.code == "daily_tokens_exhausted"
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 86400
    await admit_once(limits, "v2")  # another caller has their own day
    clock.now += int(caught.value.headers["Retry-After"])
    await admit_once(limits, "v1")


async def test_a_burst_is_committed_in_groups_and_counted_exactly(db) -> None:
    limits = SharedLimits(db, concurrent=1000, per_minute=30, clock=Clock())

    results = await asyncio.gather(
        *(answer_using(limits, f"v{i % 2}", "tinyllama:latest", 1, 2) for i in range(80)), return_exceptions=True
    )

    refused = [r for r in results if isinstance(r, TooManyRequests)]
    assert len(refused) == 80 - 60 and all(r.code == "rate_limited" for r in refused)  # 30 a minute each
    rows = await db.fetch_all("SELECT user_id, answers, prompt_tokens FROM chat_usage ORDER BY user_id")
    assert [tuple(r) for r in rows] == [("v0", 30, 30), ("v1", 30, 30)]
    assert await limits.generating("v0") == await limits.generating("v1") == 0


TWO_REPLICAS = """
import asyncio, json, sys
from events.catalog import ChatCompleted
from events.envelope import Event
from functions.chat.limits import SharedLimits
from studio.runtime.database import Database
from studio.runtime.errors import TooManyRequests

async def main():
    db = Database(sys.argv[1])
    await db.open()
    limits = SharedLimits(db, concurrent=100, per_minute=10)
    admitted = 0
    for _ in range(10):
        try:
            async with limits.admit("shared-caller"):
                admitted += 1
        except TooManyRequests:
            pass
    await db.close()
    print(admitted)

asyncio.run(main())
"""


async def test_two_chat_replicas_in_two_processes_share_one_limit(db, db_target: Path | DatabaseUrl) -> None:
    target = db_target.url if isinstance(db_target, DatabaseUrl) else str(db_target)
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", TWO_REPLICAS, target, stdout=asyncio.subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]

    admitted = [int(out.decode().strip()) for out, _ in outputs]
    assert sum(admitted) == 10, admitted  # ten a minute in all, not ten per replica


async def test_the_slot_that_frees_records_the_outcome_event_in_the_outbox_with_the_usage(db) -> None:
    """Issue 21: the usage event rides in the transaction that frees the slot (published by the outbox)."""
    limits = SharedLimits(db, concurrent=2, per_minute=100, clock=Clock())
    data = ChatCompleted(
        model="tinyllama:latest",
        user_id="v1",
        prompt_tokens=3,
        completion_tokens=4,
        time_to_first_token_ms=1.0,
        duration_ms=2.0,
        tokens_per_s=None,
        done_reason="stop",
        api="messages",
    )
    event = Event(type=data.TYPE, source="/chat", data=data.to_data(), subject=data.subject)
    async with limits.admit("v1") as slot:
        slot.model, slot.prompt_tokens, slot.completion_tokens, slot.event = "tinyllama:latest", 3, 4, event

    rows = await db.fetch_all("SELECT event_id, event_type FROM outbox")
    assert [tuple(r) for r in rows] == [(event.id, "chat.completed")]
    assert Event.from_json((await db.fetch_one("SELECT payload FROM outbox"))["payload"]).data["api"] == "messages"
    usage = await db.fetch_all("SELECT prompt_tokens, completion_tokens FROM chat_usage")
    assert [tuple(r) for r in usage] == [(3, 4)]


async def test_an_admitted_slot_says_how_many_tokens_are_left_today(db) -> None:
    limits = SharedLimits(db, concurrent=2, per_minute=100, tokens_per_day=100, clock=Clock())
    await answer_using(limits, "v1", "tinyllama:latest", 30, 40)
    async with limits.admit("v1") as slot:
        assert slot.remaining == 30
    async with SharedLimits(db, concurrent=2, per_minute=100).admit("v1") as unlimited:
        assert unlimited.remaining is None


async def test_an_early_admission_refused_by_the_shared_count_raises_when_awaited_and_frees_nothing(db) -> None:
    clock = Clock()
    one, other = (SharedLimits(db, concurrent=3, per_minute=100, clock=clock) for _ in range(2))  # two replicas
    async with contextlib.AsyncExitStack() as held:
        for _ in range(3):
            await held.enter_async_context(one.admit("v1"))
        with pytest.raises(TooManyRequests) as caught:
            async with other.admit("v1", early=True) as slot:  # this replica has seen none: early
                assert slot.admission is not None
                await slot.admitted()
        assert caught.value.code == "too_many_generations"
        assert await other.generating("v1") == 3
    assert await other.generating("v1") == 0
