"""What the monitor remembers: event counts and rates, recent events, function request metrics."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from events.envelope import Event

RATE_WINDOWS_S = (60, 300)


@dataclass
class EventCounts:
    """Totals per event type and per-second buckets for rates over the last few minutes."""

    totals: dict[str, int] = field(default_factory=dict)
    _seconds: dict[str, deque[list[int]]] = field(default_factory=dict)  # type -> [[second, count], ...]

    def add(self, event_type: str, now: float) -> None:
        self.totals[event_type] = self.totals.get(event_type, 0) + 1
        second = int(now)
        ring = self._seconds.setdefault(event_type, deque())
        if ring and ring[-1][0] == second:
            ring[-1][1] += 1
        else:
            ring.append([second, 1])
        horizon = second - max(RATE_WINDOWS_S)
        while ring and ring[0][0] <= horizon:
            ring.popleft()

    def rate(self, event_type: str, window_s: int, now: float) -> float:
        ring = self._seconds.get(event_type, ())
        since = int(now) - window_s
        return sum(c for s, c in ring if s > since) / window_s

    def summary(self, now: float) -> dict[str, dict[str, float]]:
        return {
            t: {"total": n, **{f"per_s_{w // 60}m": round(self.rate(t, w, now), 4) for w in RATE_WINDOWS_S}}
            for t, n in sorted(self.totals.items())
        }


@dataclass
class RecentEvents:
    """A bounded log of the latest events, newest last."""

    size: int = 1000
    _items: deque[dict[str, Any]] = field(default_factory=deque)

    def add(self, event: Event) -> None:
        self._items.append(event.to_dict())
        while len(self._items) > self.size:
            self._items.popleft()

    def latest(self, limit: int, type_prefix: str | None = None) -> list[dict[str, Any]]:
        items = [e for e in self._items if not type_prefix or e["type"].startswith(type_prefix)]
        return items[-limit:]


@dataclass
class InstanceReport:
    function: str
    instance: str
    uptime_s: float
    http: dict[str, Any]
    seen_at: float


@dataclass
class FunctionReports:
    """The latest heartbeat of every function instance (HTTP counters ride on heartbeats)."""

    forget_after_s: float = 600.0
    instances: dict[tuple[str, str], InstanceReport] = field(default_factory=dict)

    def update(self, data: dict[str, Any], now: float) -> None:
        key = (data["function"], data["instance"])
        self.instances[key] = InstanceReport(data["function"], data["instance"], float(data.get("uptime_s", 0)),
                                             data.get("http") or {}, now)

    def current(self, now: float | None = None) -> list[InstanceReport]:
        now = time.monotonic() if now is None else now
        for key, rep in list(self.instances.items()):
            if now - rep.seen_at > self.forget_after_s:
                del self.instances[key]
        return list(self.instances.values())
