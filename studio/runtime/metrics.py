"""Request statistics every function keeps and ships in its heartbeats for the monitor."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# Seconds; the last bucket is +Inf.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class _Latency:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0


class RequestStats:
    """Counters by (method, route, status) and latency histograms by (method, route); cumulative."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Latency] = {}
        self.inflight = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get((method, route))
        if hist is None:
            hist = self.latency[(method, route)] = _Latency()
        hist.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        hist.total += seconds
        hist.n += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": [{"method": m, "route": r, "status": s, "count": c} for (m, r, s), c in self.requests.items()],
            "latency": [
                {"method": m, "route": r, "buckets": h.counts, "sum": h.total, "count": h.n}
                for (m, r), h in self.latency.items()
            ],
        }
