"""Overall progress of an Ollama pull, from its stream of per-layer status lines.

Layers are pulled one at a time, each line giving that layer's `completed` of `total`; the overall
figures sum every layer seen so far. Speed is smoothed; the percentage never goes backwards.
Updates are worth publishing on a phase change or every `interval` seconds (about two a second).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


def phase_of(status: str) -> str:
    if status.startswith("pulling manifest"):
        return "manifest"
    if status.startswith("pulling "):
        return "downloading"
    if status.startswith("verifying"):
        return "verifying"
    if status in ("success",):
        return "done"
    return "writing"  # writing manifest, removing unused layers


@dataclass
class PullProgress:
    interval: float = 0.5
    clock: Any = time.monotonic
    phase: str = "manifest"
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    percent: float = 0.0
    bytes_per_s: float = 0.0
    _last_emit: float | None = None
    _last_bytes: int = 0
    _last_time: float | None = None

    @property
    def completed_bytes(self) -> int:
        return sum(c for c, _ in self.layers.values())

    @property
    def total_bytes(self) -> int:
        return sum(t for _, t in self.layers.values())

    def update(self, line: dict[str, Any]) -> bool:
        """Take one line of the pull stream; True when an update should be published now."""
        phase = phase_of(str(line.get("status", "")))
        changed = phase != self.phase
        self.phase = phase
        digest = line.get("digest")
        if digest and isinstance(line.get("total"), int):
            self.layers[digest] = (int(line.get("completed") or 0), int(line["total"]))
        total = self.total_bytes
        if total:
            self.percent = max(self.percent, round(100.0 * self.completed_bytes / total, 1))
        if phase in ("verifying", "writing", "done"):
            self.percent = 100.0
        now = self.clock()
        self._measure_speed(now)
        due = self._last_emit is None or now - self._last_emit >= self.interval
        if changed or due:
            self._last_emit = now
            return phase != "done"
        return False

    def _measure_speed(self, now: float) -> None:
        if self._last_time is None:
            self._last_time, self._last_bytes = now, self.completed_bytes
            return
        elapsed = now - self._last_time
        if elapsed >= 0.25:
            rate = max(0.0, (self.completed_bytes - self._last_bytes) / elapsed)
            self.bytes_per_s = rate if self.bytes_per_s == 0 else 0.6 * self.bytes_per_s + 0.4 * rate
            self._last_time, self._last_bytes = now, self.completed_bytes

    def snapshot(self) -> dict[str, Any]:
        remaining = max(0, self.total_bytes - self.completed_bytes)
        eta = round(remaining / self.bytes_per_s, 1) if self.bytes_per_s > 0 and self.phase == "downloading" else None
        return {
            "phase": self.phase,
            "completed_bytes": self.completed_bytes,
            "total_bytes": self.total_bytes,
            "percent": self.percent,
            "bytes_per_s": round(self.bytes_per_s, 1),
            "eta_s": eta,
        }


PHASES = ("manifest", "downloading", "verifying", "writing", "done")  # the order a pull goes through


class FleetProgress:
    """One install's pulls onto several nodes at once: each node's progress, and the overall figures
    (the average percentage, the summed bytes and speed, the slowest node's time left, the phase
    of the node furthest behind)."""

    def __init__(self, nodes: list[str], interval: float = 0.5) -> None:
        self.pulls = {n: PullProgress(interval=interval) for n in nodes}

    def update(self, node: str, line: dict[str, Any]) -> bool:
        return self.pulls[node].update(line)

    def per_node(self) -> dict[str, dict[str, Any]]:
        return {
            n: {k: v for k, v in p.snapshot().items() if k in ("phase", "percent", "completed_bytes", "total_bytes")}
            for n, p in self.pulls.items()
        }

    def snapshot(self) -> dict[str, Any]:
        if len(self.pulls) == 1:
            return next(iter(self.pulls.values())).snapshot()
        each = [p.snapshot() for p in self.pulls.values()]
        etas = [s["eta_s"] for s in each if s["eta_s"] is not None]
        return {
            "phase": min((s["phase"] for s in each), key=PHASES.index),
            "completed_bytes": sum(s["completed_bytes"] for s in each),
            "total_bytes": sum(s["total_bytes"] for s in each),
            "percent": round(sum(s["percent"] for s in each) / len(each), 1),
            "bytes_per_s": round(sum(s["bytes_per_s"] for s in each), 1),
            "eta_s": max(etas) if etas else None,
        }
