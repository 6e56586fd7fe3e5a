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

import nats.aio.msg
import nats.errors
from nats.js import api

from events.bus import STREAM, Bus, BusUnavailable
from events.envelope import Event, InvalidEvent, nats_subject, new_id


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

    async def on_live(msg: nats.aio.msg.Msg) -> None:
        with contextlib.suppress(InvalidEvent):
            live.put_nowait(Event.from_json(msg.data))

    sub = await bus.nc.subscribe(nats_subject(">"), cb=on_live)
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
    try:
        await bus.nc.jetstream().publish(
            nats_subject(event.type), event.to_json(), timeout=5.0, headers={"Nats-Msg-Id": f"{event.id}.{new_id()}"}
        )
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailable(f"could not redeliver {event.type}: {type(exc).__name__}") from None


async def replay(
    bus: Bus, start: datetime | None, limit: int = 100_000, subjects: Sequence[str] | None = None
) -> list[Event]:
    """Durable events stored since `start` (None: all of them), oldest first, read by an ephemeral consumer."""
    js = bus.nc.jetstream()
    by_time = {"deliver_policy": api.DeliverPolicy.BY_START_TIME, "opt_start_time": start}
    only = (
        {}
        if not subjects
        else {"filter_subject": subjects[0]}
        if len(subjects) == 1
        else {"filter_subjects": list(subjects)}
    )
    info = await bus.nc.jsm().add_consumer(
        STREAM,
        api.ConsumerConfig(
            **only,
            **(by_time if start is not None else {"deliver_policy": api.DeliverPolicy.ALL}),
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    psub = await js.pull_subscribe_bind(consumer=info.name, stream=STREAM)
    events: list[Event] = []
    try:
        pending = info.num_pending or 0
        while pending > 0 and len(events) < limit:
            try:
                msgs = await psub.fetch(batch=min(500, pending), timeout=2)
            except nats.errors.TimeoutError:
                break
            for msg in msgs:
                with contextlib.suppress(InvalidEvent):
                    events.append(Event.from_json(msg.data))
                pending = msg.metadata.num_pending
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        with contextlib.suppress(Exception):
            await bus.nc.jsm().delete_consumer(STREAM, info.name)
    return events
