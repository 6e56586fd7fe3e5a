"""`localai-studio events tail`: replay recent durable events, then follow the live stream.

`follow=False` prints what is stored (since `since`, else everything the stream keeps) and returns, so
scripts read the stream without a timeout; `until` stops at that time (history newer than it is
left out; when it is in the future, live events are followed until then).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from events.bus import Bus, Message
from events.envelope import Event, InvalidEvent, nats_subject


def matches(event: Event, pattern: str) -> bool:
    return pattern in ("", "*", ">") or fnmatch.fnmatchcase(event.type, pattern)


def format_human(event: Event, width: int = 160) -> str:
    when = event.time[11:23] if len(event.time) >= 23 else event.time
    data = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in event.data.items())
    line = f"{when}  {event.type:<22} {event.subject or '-':<24} {data}"
    return line if len(line) <= width else line[: width - 1] + "…"


def format_json(event: Event) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"))


async def tail(
    bus: Bus,
    emit: Callable[[Event], None],
    *,
    pattern: str = "*",
    since: timedelta | None = None,
    stop: asyncio.Event | None = None,
    follow: bool = True,
    until: datetime | None = None,
) -> None:
    """Emit matching events: history first (durable events newer than `since`), then live ones."""
    if not follow or (until is not None and until <= datetime.now(UTC)):
        start = datetime.now(UTC) - since if since is not None else None
        for event in await replay(bus, start):
            if until is not None and _time(event) > until:
                break
            if matches(event, pattern):
                emit(event)
        return
    live: asyncio.Queue[Event] = asyncio.Queue()

    async def on_live(msg: Message) -> None:
        with contextlib.suppress(InvalidEvent):
            live.put_nowait(Event.from_json(msg.data))

    sub = await bus.subscribe(nats_subject(">"), on_live)
    seen: set[str] = set()
    try:
        if since is not None:
            for event in await replay(bus, datetime.now(UTC) - since):
                seen.add(event.id)
                if matches(event, pattern):
                    emit(event)
        stopper = asyncio.ensure_future(stop.wait()) if stop else asyncio.get_running_loop().create_future()
        if until is not None:
            deadline = asyncio.get_running_loop().call_later(
                max(0.0, (until - datetime.now(UTC)).total_seconds()), stopper.cancel
            )
            stopper.add_done_callback(lambda _: deadline.cancel())
        try:
            while True:
                getter = asyncio.ensure_future(live.get())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done or (until is not None and _time(getter.result()) > until):
                    getter.cancel()
                    return
                event = getter.result()
                if event.id in seen:
                    continue
                if len(seen) > 100_000:
                    seen.clear()
                if matches(event, pattern):
                    emit(event)
        finally:
            stopper.cancel()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _time(event: Event) -> datetime:
    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


async def stored(bus: Bus, types: Sequence[str], since: datetime | None = None) -> list[Event]:
    """The durable events of these types still in the stream (since `since`), oldest first."""
    return await replay(bus, since, subjects=[nats_subject(t) for t in types])


async def redeliver(bus: Bus, event: Event) -> None:
    """Put a stored event into the stream again (a dead letter's redrive), under a fresh message id so
    the stream's duplicate window does not drop it; every consumer of its type handles it again (they
    are idempotent), the one that gave up included."""
    await bus.republish(event)


async def replay(
    bus: Bus, start: datetime | None, limit: int = 100_000, subjects: Sequence[str] | None = None
) -> list[Event]:
    """Durable events stored since `start` (None: all of them), oldest first."""
    return await bus.history(start, limit=limit, subjects=subjects)
