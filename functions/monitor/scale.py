"""The "when to scale" signals: concurrent visitors, chat requests a second, answers waiting per Ollama
node, CPU per server, each against its threshold (STUDIO_SCALE_*), as metrics and as an alert that
says which threshold was crossed and what to do.

Inputs arrive on the bus, so every monitor replica adds up every server: `server.reported` (each
gateway: visitors seen in the last five minutes, the machine's CPU), heartbeats (chat: answers open on
each Ollama node, `load.ollama_queue`) and chat outcomes (one `chat.completed|failed|cancelled` per
request). A signal over its threshold publishes `scale.threshold_crossed` once per episode, under one id
per signal and quarter of an hour, so with several monitor replicas the stream keeps one and one
replica posts the alert; back under the threshold, the next crossing alerts again (in a later quarter
of an hour: within the stream's ten-minute duplicate window, the same id is kept once, so a flapping
signal alerts at most about once a quarter).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from events.catalog import ScaleThresholdCrossed
from studio.runtime.settings import Settings

CHAT_WINDOW_S = 10.0  # chat requests a second: averaged over this window
CPU_SAMPLES = 6  # CPU: the mean of a server's last reports (one a heartbeat), so a spike does not alert
EPISODE_S = 900.0  # replicas crossing within one quarter of an hour publish one event between them

GUIDE = "README: Several servers"
ADD_SERVER = f"add a server behind the load balancer ({GUIDE})"
ADVICE = {
    "visitors": ("STUDIO_SCALE_VISITORS", ADD_SERVER),
    "chat_requests_per_s": ("STUDIO_SCALE_CHAT_PER_S", f"{ADD_SERVER}; if answers queue too, add an Ollama node"),
    "ollama_queue": ("STUDIO_SCALE_QUEUE_DEPTH", f"add an Ollama node (STUDIO_OLLAMA_URLS, {GUIDE})"),
    "cpu_percent": ("STUDIO_SCALE_CPU_PERCENT", f"{ADD_SERVER}, or move Ollama to its own machine"),
}
WHAT = {
    "visitors": "concurrent visitors",
    "chat_requests_per_s": "chat requests a second",
    "ollama_queue": "answers waiting on Ollama node",
    "cpu_percent": "CPU % on server",
}


@dataclass(frozen=True)
class Thresholds:
    visitors: int = 100
    chat_per_s: float = 50.0
    queue_depth: int = 10
    cpu_percent: float = 80.0

    @classmethod
    def of(cls, settings: Settings) -> Thresholds:
        return cls(
            settings.scale_visitors, settings.scale_chat_per_s, settings.scale_queue_depth, settings.scale_cpu_percent
        )


@dataclass
class _Report:
    value: Any
    at: float


@dataclass
class ScaleSignals:
    thresholds: Thresholds
    stale_s: float = 30.0  # a gateway or chat instance silent this long no longer counts (it stopped)
    gateways: dict[str, _Report] = field(default_factory=dict)  # gateway instance -> (server, visitors)
    cpu: dict[str, deque[float]] = field(default_factory=dict)  # server -> its last CPU samples
    cpu_seen: dict[str, float] = field(default_factory=dict)
    queues: dict[str, _Report] = field(default_factory=dict)  # chat instance -> {node: answers}
    chats: deque[float] = field(default_factory=deque)
    over: set[tuple[str, str]] = field(default_factory=set)

    # -- inputs ----------------------------------------------------------------------------------

    def server_reported(self, data: dict[str, Any], now: float) -> None:
        server = str(data.get("server", ""))
        self.gateways[str(data.get("instance", server))] = _Report(int(data.get("visitors", 0)), now)
        samples = self.cpu.setdefault(server, deque(maxlen=CPU_SAMPLES))
        samples.append(float(data.get("cpu_percent", 0.0)))
        self.cpu_seen[server] = now

    def heartbeat(self, data: dict[str, Any], now: float) -> None:
        queue = (data.get("load") or {}).get("ollama_queue")
        if isinstance(queue, dict):
            self.queues[str(data.get("instance", ""))] = _Report(queue, now)

    def chat_answered(self, now: float) -> None:
        self.chats.append(now)

    # -- the signals -----------------------------------------------------------------------------

    def visitors(self, now: float) -> int:
        return sum(r.value for r in self.gateways.values() if now - r.at <= self.stale_s)

    def chat_per_s(self, now: float) -> float:
        while self.chats and now - self.chats[0] > CHAT_WINDOW_S:
            self.chats.popleft()
        return len(self.chats) / CHAT_WINDOW_S

    def queue_depth(self, now: float) -> dict[str, int]:
        """Answers open on each Ollama node, over every chat replica."""
        nodes: dict[str, int] = {}
        for report in self.queues.values():
            if now - report.at <= self.stale_s:
                for node, n in report.value.items():
                    nodes[str(node)] = nodes.get(str(node), 0) + int(n)
        return nodes

    def cpu_percent(self, now: float) -> dict[str, float]:
        return {
            server: round(sum(samples) / len(samples), 1)
            for server, samples in self.cpu.items()
            if samples and now - self.cpu_seen.get(server, 0) <= self.stale_s
        }

    def readings(self, now: float) -> list[tuple[str, str, float, float]]:
        """(signal, key, value, threshold) for every signal now."""
        t = self.thresholds
        out = [("visitors", "", float(self.visitors(now)), float(t.visitors))]
        out.append(("chat_requests_per_s", "", self.chat_per_s(now), t.chat_per_s))
        out += [("ollama_queue", node, float(n), float(t.queue_depth)) for node, n in self.queue_depth(now).items()]
        out += [("cpu_percent", server, pct, t.cpu_percent) for server, pct in self.cpu_percent(now).items()]
        return out

    def check(self, now: float, wall: float) -> list[tuple[str, ScaleThresholdCrossed]]:
        """The signals that went over their threshold since the last check, each with its event id."""
        crossed: list[tuple[str, ScaleThresholdCrossed]] = []
        still_over: set[tuple[str, str]] = set()
        for signal, key, value, threshold in self.readings(now):
            if value <= threshold:
                continue
            still_over.add((signal, key))
            if (signal, key) in self.over:
                continue
            setting, advice = ADVICE[signal]
            data = ScaleThresholdCrossed(
                signal=signal, key=key, value=value, threshold=threshold, setting=setting, advice=advice
            )
            crossed.append((episode_id(signal, key, wall), data))
        self.over = still_over
        return crossed


def episode_id(signal: str, key: str, wall: float) -> str:
    """The same id from every monitor replica for one signal in one quarter of an hour."""
    return hashlib.sha256(f"scale|{signal}|{key}|{int(wall // EPISODE_S)}".encode()).hexdigest()[:32]


def alert_text(data: ScaleThresholdCrossed, where: str) -> str:
    what = WHAT.get(data.signal, data.signal) + (f" {data.key}" if data.key else "")
    return (
        f":chart_with_upwards_trend: [{where}] time to scale: {what} is {data.value:g}, over the threshold of "
        f"{data.threshold:g} ({data.setting}). What to do: {data.advice}."
    )
