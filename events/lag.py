"""How far behind each durable consumer is, read from JetStream itself (like `nats consumer report`).

Per consumer of the stream: events stored but not yet delivered (`pending`), delivered but not yet
acknowledged (`ack_pending`), delivered more than once and still unacknowledged (`redelivered`), the
age of the oldest event not yet acknowledged (`oldest_pending_s`: 0 when caught up; this is the
lag that matters, whatever the event rate), and how long ago it last fetched or acknowledged.
The monitor exports these as metrics and alerts on them; `localai-studio events consumers` prints them.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from events.bus import STREAM, Bus, BusUnavailable, ConsumerLag

__all__ = ["ConsumerLag", "consumer_lags", "remove_consumer", "table"]


async def consumer_lags(bus: Bus, *, timeout: float = 2.0) -> list[ConsumerLag]:
    """Every durable consumer of the stream with its lag, sorted by name; raises BusUnavailable."""
    try:
        return await asyncio.wait_for(bus.consumer_lags(), timeout)
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailable(f"JetStream did not report its consumers: {type(exc).__name__}") from None


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
