"""Who is on the site: the distinct visitors this gateway saw lately, reported with the machine's CPU
every heartbeat as `server.reported`, so the monitor can add the servers up against the "when to scale"
thresholds (STUDIO_SCALE_VISITORS, STUDIO_SCALE_CPU_PERCENT)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable

from events.bus import Bus, BusUnavailable
from events.catalog import ServerReported
from events.envelope import Event
from studio.runtime.cpu import CpuSampler

WINDOW_S = 300.0  # a visitor seen in the last five minutes is on the site
MAX_TRACKED = 200_000  # bounded memory: beyond this many, the oldest are forgotten first


class Presence:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: dict[str, float] = {}  # visitor -> last seen (monotonic), oldest first

    def seen(self, visitor: str, now: float | None = None) -> None:
        self._seen.pop(visitor, None)  # re-inserted last: the dict stays ordered by last visit
        self._seen[visitor] = time.monotonic() if now is None else now
        if len(self._seen) > MAX_TRACKED:
            del self._seen[next(iter(self._seen))]

    def active(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        while self._seen:
            oldest = next(iter(self._seen))
            if now - self._seen[oldest] <= self.window_s:
                break
            del self._seen[oldest]
        return len(self._seen)


async def report_forever(bus: Bus, presence: Presence, live_streams: Callable[[], int], every_s: float) -> None:
    """Publish this gateway's `server.reported` every `every_s` (live: a missed one is replaced soon)."""
    cpu = CpuSampler()
    server = socket.gethostname()
    instance = f"gateway-{server}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    while True:
        await asyncio.sleep(every_s)
        data = ServerReported(
            server=server,
            instance=instance,
            visitors=presence.active(),
            live_streams=live_streams(),
            cpu_percent=cpu.percent(),
        )
        with contextlib.suppress(BusUnavailable):
            await bus.publish(Event(type=data.TYPE, source="/gateway", data=data.to_data(), subject=data.subject))
