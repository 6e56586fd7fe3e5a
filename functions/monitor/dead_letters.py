"""Dead letters: the events a consumer gave up on (`event.dead_lettered`), read from the stream, and
their redrive after the operator fixed the cause.

The list comes from the durable stream itself (what it still keeps, `STUDIO_EVENTS_MAX_AGE_DAYS`), so
it survives restarts and is the same on every replica. A redrive puts the original event back into
the stream (`events.tail.redeliver`): every consumer of its type handles it again, idempotently, the
one that gave up included. Each redrive is an `operator.dead_letter_redriven` event saying who did
it, and a redriven dead letter is listed as such.
"""

from __future__ import annotations

from typing import Any

from events.bus import Bus
from events.catalog import EventDeadLettered, OperatorDeadLetterRedriven
from events.envelope import Event
from events.tail import redeliver, stored


class UnknownDeadLetter(LookupError):
    pass


async def dead_letters(bus: Bus) -> list[dict[str, Any]]:
    """Every dead letter still in the stream, newest first, with whether it was redriven since."""
    events = await stored(bus, [EventDeadLettered.TYPE, OperatorDeadLetterRedriven.TYPE])
    redriven: dict[str, str] = {}
    letters: list[Event] = []
    for event in events:
        if event.type == OperatorDeadLetterRedriven.TYPE:
            redriven[event.data["event_id"]] = event.time
        else:
            letters.append(event)
    out = []
    for letter in reversed(letters):
        d = letter.data
        after = redriven.get(d["event_id"])
        out.append(
            {
                "id": letter.id,
                "time": letter.time,
                "event_id": d["event_id"],
                "event_type": d["event_type"],
                "consumer": d["consumer"],
                "attempts": d["attempts"],
                "reason": d["reason"],
                "error": d["error"],
                "correlation_id": letter.correlationid,
                "redriven_at": after if after and after >= letter.time else None,
            }
        )
    return out


async def redrive(bus: Bus, event_id: str, operator: str, publish: Any) -> dict[str, Any]:
    """Redeliver the original of the dead letter for `event_id`; `publish` records who did it."""
    letter = next((d for d in await dead_letters(bus) if d["event_id"] == event_id), None)
    if letter is None:
        raise UnknownDeadLetter(f"no dead letter for event {event_id} in the stream")
    original = next((e for e in await stored(bus, [letter["event_type"]]) if e.id == event_id), None)
    if original is None:
        raise UnknownDeadLetter(f"event {event_id} is no longer in the stream (older than its retention)")
    await redeliver(bus, original)
    await publish(
        OperatorDeadLetterRedriven(
            operator=operator, event_id=event_id, event_type=letter["event_type"], consumer=letter["consumer"]
        )
    )
    return letter
