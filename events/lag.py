"""How far behind each durable consumer is, read from JetStream itself (like `nats consumer report`).

Per consumer of the stream: events stored but not yet delivered (`pending`), delivered but not yet
acknowledged (`ack_pending`), delivered more than once and still unacknowledged (`redelivered`), the
age of the oldest event not yet acknowledged (`oldest_pending_s`: 0 when caught up; this is the
lag that matters, whatever the event rate), and how long ago it last fetched or acknowledged.
The monitor exports these as metrics and alerts on them; `localai-studio events consumers` prints them.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api

from events.bus import STREAM, Bus, BusUnavailable


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    consumer: str
    pending: int
    ack_pending: int
    redelivered: int
    oldest_pending_s: float
    last_active_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _oldest_unacked(bus: Bus, info: api.ConsumerInfo) -> datetime | None:
    """When the oldest event this consumer has not acknowledged was stored (None: there is none)."""
    if not (info.num_pending or info.num_ack_pending):
        return None
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    config = info.config
    subjects = list(config.filter_subjects or []) or [config.filter_subject or ">"]
    jsm = bus.nc.jsm()
    times = []
    for subject in subjects:
        try:
            msg = await jsm.get_msg(STREAM, seq=floor + 1, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            continue
        if msg.time is not None:
            times.append(msg.time)
    return min(times) if times else None


def _since(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max(0.0, (now - when).total_seconds())


async def consumer_lags(bus: Bus, *, timeout: float = 2.0) -> list[ConsumerLag]:
    """Every durable consumer of the stream with its lag, sorted by name; raises BusUnavailable."""
    try:
        return await asyncio.wait_for(_lags(bus), timeout)
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailable(f"JetStream did not report its consumers: {type(exc).__name__}") from None


async def _lags(bus: Bus) -> list[ConsumerLag]:
    infos = await bus.nc.jsm().consumers_info(STREAM)
    now = datetime.now(UTC)
    out = []
    for info in infos:
        if not info.config.durable_name:
            continue  # an ephemeral reader (events tail), not a consumer that must keep up
        oldest = await _oldest_unacked(bus, info)
        active = [s.last_active for s in (info.delivered, info.ack_floor) if s is not None and s.last_active]
        out.append(
            ConsumerLag(
                consumer=info.name,
                pending=info.num_pending or 0,
                ack_pending=info.num_ack_pending or 0,
                redelivered=info.num_redelivered or 0,
                oldest_pending_s=round(_since(oldest, now) or 0.0, 3),
                last_active_s=None if not active else round(_since(max(active), now) or 0.0, 3),
            )
        )
    return sorted(out, key=lambda lag: lag.consumer)


async def remove_consumer(bus: Bus, name: str) -> None:
    """Delete a durable consumer (one a renamed or removed handler left, whose backlog only grows).
    Raises LookupError when there is none by that name. A running handler would recreate it from the
    start of the stream, so remove only what no function declares."""
    try:
        await bus.nc.jsm().delete_consumer(STREAM, name)
    except nats.js.errors.NotFoundError:
        raise LookupError(f"no consumer named {name!r} on {STREAM}; see localai-studio events consumers") from None
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailable(f"JetStream did not remove {name}: {type(exc).__name__}") from None


def table(lags: list[ConsumerLag]) -> str:
    """The lags as a plain-text table for people."""

    def age(s: float | None) -> str:
        if s is None:
            return "never"
        if s < 60:
            return f"{s:.1f}s"
        if s < 3600:
            return f"{s / 60:.1f}m"
        return f"{s / 3600:.1f}h"

    head = ("consumer", "pending", "ack pending", "redelivered", "oldest pending", "last active")
    rows = [
        (
            lag.consumer,
            str(lag.pending),
            str(lag.ack_pending),
            str(lag.redelivered),
            age(lag.oldest_pending_s) if lag.pending or lag.ack_pending else "-",
            age(lag.last_active_s) + (" ago" if lag.last_active_s is not None else ""),
        )
        for lag in lags
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [head, *rows]
    ]
    return "\n".join(lines)
