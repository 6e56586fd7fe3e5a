"""The components `/health` checks. Each check answers within a second or two and never raises."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.bus import Bus, BusUnavailable
from events.lag import consumer_lags
from studio.clients.ollama import OllamaClient, OllamaError
from studio.runtime.database import Database

INTEGRITY_TTL_S = 60.0


@dataclass
class Check:
    name: str
    report: dict[str, Any]


def ok(name: str, **facts: Any) -> Check:
    return Check(name, {"status": "ok", **facts})


def warn(name: str, message: str, **facts: Any) -> Check:
    return Check(name, {"status": "warn", "message": message, **facts})


def fail(name: str, message: str, **facts: Any) -> Check:
    return Check(name, {"status": "fail", "message": message, **facts})


async def check_nats(bus: Bus) -> Check:
    if not bus.connected:
        down_for = ""
        if bus.disconnected_since is not None:
            down_for = f" for {asyncio.get_running_loop().time() - bus.disconnected_since:.0f} s"
        return fail(
            "nats",
            f"NATS at {bus.url} is unreachable{down_for}; the studio keeps retrying. "
            "Start nats-server (or check STUDIO_NATS_URL).",
            url=bus.url,
        )
    try:
        js = await asyncio.wait_for(bus.jetstream_info(), timeout=1.5)
    except (TimeoutError, BusUnavailable) as exc:
        return fail(
            "nats", f"connected, but JetStream does not answer ({exc}); is nats-server run with -js?", url=bus.url
        )
    return ok("nats", url=bus.url, jetstream=js)


async def check_consumers(bus: Bus, threshold_s: float, *, detail: bool) -> Check:
    """Each durable consumer's lag; `warn` (not `fail`: the studio still serves) when one is behind."""
    try:
        lags = await consumer_lags(bus, timeout=1.5)
    except BusUnavailable as exc:
        return warn("consumers", f"consumer lags unavailable: {exc}")
    behind = [lag for lag in lags if lag.oldest_pending_s > threshold_s]
    facts: dict[str, Any] = {"count": len(lags), "behind": [lag.consumer for lag in behind]}
    if detail:  # the operator's view: every consumer's figures
        facts["consumers"] = {lag.consumer: {k: v for k, v in lag.to_dict().items() if k != "consumer"} for lag in lags}
    if behind:
        worst = max(behind, key=lambda lag: lag.oldest_pending_s)
        return warn(
            "consumers",
            f"{len(behind)} consumer(s) more than {threshold_s:g} s behind (worst: {worst.consumer}, "
            f"{worst.oldest_pending_s:.0f} s, {worst.pending + worst.ack_pending} events); "
            "see localai-studio events consumers",
            **facts,
        )
    return ok("consumers", **facts)


_integrity: dict[str, tuple[float, str]] = {}


async def check_database(db: Database) -> Check:
    key = db.location
    cached = _integrity.get(key)
    now = time.monotonic()
    try:
        if cached is None or now - cached[0] > INTEGRITY_TTL_S:
            result = await asyncio.wait_for(db.integrity_check(), timeout=5)
            cached = _integrity[key] = (now, result)
    except Exception as exc:
        return fail("database", f"the database at {db.location} cannot be read: {exc}", path=db.location)
    age = round(now - cached[0], 1)
    if cached[1] != "ok":
        return fail(
            "database",
            f"integrity check failed: {cached[1][:300]}; restore the latest backup",
            path=db.location,
            integrity=cached[1][:300],
            checked_s_ago=age,
        )
    return ok("database", path=db.location, integrity="ok", checked_s_ago=age)


async def check_ollama(clients: list[OllamaClient], asking: Awaitable[dict[str, Any] | None] | None = None) -> Check:
    """Every Ollama node: up or down, its models, the ones in memory, and (from the chat function, when
    it answers: `asking`) the answers in flight and how many answers the cloud fallback gave. One node:
    as before. A fleet: `warn` naming the nodes down while one still answers, `fail` when none does."""
    reports = await asyncio.gather(*(_node(c) for c in clients))
    seen = (await asking if asking is not None else None) or {}
    nodes = {c.base_url: r for c, r in zip(clients, reports, strict=True)}
    for url, report in nodes.items():
        chat = (seen.get("nodes") or {}).get(url) or {}
        if "in_flight" in chat:
            report["in_flight"] = chat["in_flight"]
    extra = {"fallback_answers": seen["fallbacks"]} if "fallbacks" in seen else {}
    down = [url for url, r in nodes.items() if r["status"] == "down"]
    if len(clients) == 1:
        only = clients[0].base_url
        if down:
            return fail(
                "ollama",
                f"Ollama is unreachable at {only} ({nodes[only]['error']}); start Ollama or set STUDIO_OLLAMA_URL",
                url=only,
                nodes=nodes,
                **extra,
            )
        return ok("ollama", url=only, version=nodes[only]["version"], nodes=nodes, **extra)
    named = "; ".join(f"{url} ({nodes[url]['error']})" for url in down)
    if len(down) == len(clients):
        return fail(
            "ollama",
            f"no Ollama node answers: {named}; start Ollama on them or correct STUDIO_OLLAMA_URLS",
            nodes=nodes,
            **extra,
        )
    if down:
        return warn(
            "ollama",
            f"{len(down)} of {len(clients)} Ollama nodes down: {named}; chat uses the others. Start Ollama there "
            "(models it lacks are installed when it answers again) or remove it from STUDIO_OLLAMA_URLS",
            down=down,
            nodes=nodes,
            **extra,
        )
    return ok("ollama", nodes=nodes, **extra)


async def _node(client: OllamaClient) -> dict[str, Any]:
    try:
        version, models, loaded = await asyncio.gather(client.version(), client.installed(), client.loaded())
    except OllamaError as exc:
        return {"status": "down", "error": exc.message.split(": ")[-1]}
    return {"status": "up", "version": version, "models": sorted(models), "loaded": sorted(loaded)}


async def check_disk(path: Path, min_free_mb: int) -> Check:
    usage = await asyncio.to_thread(shutil.disk_usage, path)
    free_mb = usage.free // (1 << 20)
    facts = {"path": str(path), "free_mb": free_mb, "total_mb": usage.total // (1 << 20)}
    if free_mb < min_free_mb:
        return fail(
            "disk",
            f"only {free_mb} MB free under {path} (minimum {min_free_mb} MB); free space or move STUDIO_DATA_DIR",
            **facts,
        )
    if free_mb < 2 * min_free_mb:
        return warn("disk", f"{free_mb} MB free under {path}; getting low", **facts)
    return ok("disk", **facts)


@dataclass
class Liveness:
    """Which function instances were heard from recently."""

    expected: tuple[str, ...]
    heartbeat_s: float
    seen: dict[str, dict[str, float]] = field(default_factory=dict)

    def saw(self, function: str, instance: str, at: float) -> None:
        self.seen.setdefault(function, {})[instance] = at

    def report(self, now: float) -> dict[str, Any]:
        stale_after = 3 * self.heartbeat_s
        functions: dict[str, Any] = {}
        missing = []
        for name in sorted(set(self.expected) | set(self.seen)):
            instances = self.seen.get(name, {})
            for inst, at in list(instances.items()):
                if now - at > 20 * stale_after:  # long gone: forget it
                    del instances[inst]
            alive = {i: round(now - at, 1) for i, at in instances.items() if now - at <= stale_after}
            functions[name] = {
                "status": "ok" if alive else "fail",
                "instances": len(alive),
                "last_seen_s": min(alive.values()) if alive else None,
            }
            if not alive and name in self.expected:
                missing.append(name)
        if missing:
            return {
                "status": "fail",
                "message": f"no heartbeat in {stale_after:.0f} s from: {', '.join(missing)}; "
                "check those services' logs",
                "functions": functions,
            }
        return {"status": "ok", "functions": functions}
