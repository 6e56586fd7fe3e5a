"""`localai-studio events tail --no-follow / --until`: print what is stored and exit (for scripts)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from events.catalog import PurchaseCompleted, PurchaseFailed
from events.envelope import Event
from events.tail import tail
from tests.support import eventually

CLI = str(Path(sys.executable).parent / "localai-studio")


def iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def run_tail(nats_url: str, *args: str) -> tuple[int, list[dict]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_NATS_URL"] = nats_url
    proc = await asyncio.create_subprocess_exec(
        CLI, "events", "tail", "--json", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)  # no follow: it must end by itself
    assert proc.returncode is not None, err
    return proc.returncode, [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_no_follow_prints_the_stored_events_and_exits_and_until_stops_at_a_time(bus, nats_server) -> None:
    await bus.ensure_stream()
    now = datetime.now(UTC)
    events = [
        Event(
            type=PurchaseCompleted.TYPE,
            source="/tests",
            time=iso(now - timedelta(minutes=3 - n)),
            data=PurchaseCompleted(
                purchase_id=f"pur_{n}", user_id="v_a", model="phi3:mini", kind="test", amount_cents=0, currency="usd"
            ).to_data(),
        )
        for n in range(3)
    ]
    other = Event(
        type=PurchaseFailed.TYPE,
        source="/tests",
        data=PurchaseFailed(purchase_id="pur_x", user_id="v_a", model="phi3:mini", reason="expired").to_data(),
    )
    for event in [*events, other]:
        await bus.publish(event)

    code, everything = await run_tail(nats_server.url, "--no-follow")
    assert code == 0
    assert [e["id"] for e in everything] == [e.id for e in [*events, other]]

    code, completed = await run_tail(nats_server.url, "--no-follow", "--type", "purchase.completed")
    assert code == 0 and [e["id"] for e in completed] == [e.id for e in events]

    until = iso(now - timedelta(minutes=1, seconds=30))
    code, early = await run_tail(nats_server.url, "--until", until, "--type", "purchase.*")
    assert code == 0 and [e["data"]["purchase_id"] for e in early] == ["pur_0", "pur_1"]


async def test_a_bad_until_is_refused_with_one_line(nats_server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_NATS_URL"] = nats_server.url
    proc = await asyncio.create_subprocess_exec(
        CLI, "events", "tail", "--until", "yesterday-ish", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2 and b"is not a time" in err


@pytest.mark.parametrize("transport", ["nats", "memory"], indirect=True)
async def test_tail_replays_the_stored_history_then_follows_live_events_once_each(bus) -> None:
    def completed(n: int) -> Event:
        data = PurchaseCompleted(
            purchase_id=f"pur_{n}", user_id="v_a", model="phi3:mini", kind="test", amount_cents=0, currency="usd"
        )
        return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject)

    await bus.ensure_stream()
    before = [completed(1), completed(2)]
    for event in before:
        await bus.publish(event)
    seen: list[Event] = []
    stop = asyncio.Event()
    following = asyncio.create_task(tail(bus, seen.append, pattern="purchase.*", since=timedelta(minutes=5), stop=stop))
    await eventually(lambda: len(seen) == 2, message="the history")

    after = completed(3)
    await bus.publish(after)
    await bus.publish(Event(type="heartbeat.requested", source="/tests", data={"requested_by": "t"}))  # not matched
    await eventually(lambda: len(seen) == 3, message="the live event")
    stop.set()
    await asyncio.wait_for(following, 5)
    assert [e.id for e in seen] == [e.id for e in [*before, after]]
