"""The machine's CPU use, from /proc/stat: one of the "when to scale" signals (CPU above 80 %)."""

from __future__ import annotations

from pathlib import Path

STAT = Path("/proc/stat")


def read_times(stat: Path = STAT) -> tuple[int, int] | None:
    """(busy, total) jiffies of every core since boot, or None where the system does not say."""
    try:
        first = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuSampler:
    """Percent of all cores busy between two samples (the first sample says 0)."""

    def __init__(self, stat: Path = STAT) -> None:
        self.stat = stat
        self._last = read_times(stat)

    def percent(self) -> float:
        now = read_times(self.stat)
        last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return 0.0
        return round(100.0 * (now[0] - last[0]) / (now[1] - last[1]), 1)
