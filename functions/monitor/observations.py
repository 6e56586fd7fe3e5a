"""What the monitor remembers: event counts and rates, recent events, function request metrics."""

from __future__ import annotations

import bisect
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
    inflight: int = 0


@dataclass
class FunctionReports:
    """The latest heartbeat of every function instance (HTTP counters ride on heartbeats)."""

    forget_after_s: float = 600.0
    instances: dict[tuple[str, str], InstanceReport] = field(default_factory=dict)

    def update(self, data: dict[str, Any], now: float) -> None:
        key = (data["function"], data["instance"])
        self.instances[key] = InstanceReport(
            data["function"],
            data["instance"],
            float(data.get("uptime_s", 0)),
            data.get("http") or {},
            now,
            int(data.get("inflight", 0)),
        )

    def current(self, now: float | None = None) -> list[InstanceReport]:
        now = time.monotonic() if now is None else now
        for key, rep in list(self.instances.items()):
            if now - rep.seen_at > self.forget_after_s:
                del self.instances[key]
        return list(self.instances.values())


# Seconds; the last bucket is +Inf. A model loading from disk takes seconds, a loaded one milliseconds.
FIRST_TOKEN_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CHAT_OUTCOMES = {"chat.completed": "completed", "chat.failed": "failed", "chat.cancelled": "cancelled"}


@dataclass
class ChatUsage:
    """Usage per model from the chat function's chat.* events: answers by outcome, tokens, time to first token."""

    answers: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, outcome) -> answers
    tokens: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, prompt|completion|thinking) -> tokens
    first_token: dict[str, list[float]] = field(default_factory=dict)  # model -> [count per bucket..., sum]
    fallbacks: dict[str, int] = field(default_factory=dict)  # model -> answers its cloud fallback gave
    nodes: dict[str, int] = field(default_factory=dict)  # Ollama node (or "fallback") -> answers
    apis: dict[tuple[str, str], int] = field(default_factory=dict)  # (api, outcome) -> answers
    api_tokens: dict[tuple[str, str], int] = field(default_factory=dict)  # (api, prompt|completion) -> tokens

    def per_model(self) -> dict[str, dict[str, int]]:
        """{model: {"completed", "failed", "cancelled", "prompt_tokens", "completion_tokens", "thinking_tokens"}}
        since start (thinking_tokens only for a model that thought)."""
        out: dict[str, dict[str, int]] = {}
        for (model, outcome), n in self.answers.items():
            out.setdefault(model, {})[outcome] = n
        for (model, kind), n in self.tokens.items():
            out.setdefault(model, {})[f"{kind}_tokens"] = n
        for model, n in self.fallbacks.items():
            out.setdefault(model, {})["fallback"] = n
        return out

    def add(self, event_type: str, data: dict[str, Any]) -> None:
        outcome = CHAT_OUTCOMES.get(event_type)
        if outcome is None:
            return
        model = str(data.get("model") or "unknown")
        api = str(data.get("api") or "chat")  # events from before the field: chat, the only dialect then
        self.answers[(model, outcome)] = self.answers.get((model, outcome), 0) + 1
        self.apis[(api, outcome)] = self.apis.get((api, outcome), 0) + 1
        if data.get("fallback") is True:
            self.fallbacks[model] = self.fallbacks.get(model, 0) + 1
        if isinstance(data.get("node"), str):
            self.nodes[data["node"]] = self.nodes.get(data["node"], 0) + 1
        # tokens generated before a stop or failure count too; thinking tokens are also counted in completion
        for kind in ("prompt", "completion", "thinking"):
            n = data.get(f"{kind}_tokens")
            if isinstance(n, int) and n > 0:
                self.tokens[(model, kind)] = self.tokens.get((model, kind), 0) + n
                if kind != "thinking":
                    self.api_tokens[(api, kind)] = self.api_tokens.get((api, kind), 0) + n
        ms = data.get("time_to_first_token_ms")
        if isinstance(ms, int | float) and ms >= 0:
            hist = self.first_token.setdefault(model, [0.0] * (len(FIRST_TOKEN_BUCKETS) + 2))
            hist[bisect.bisect_left(FIRST_TOKEN_BUCKETS, ms / 1000)] += 1
            hist[-1] += ms / 1000
