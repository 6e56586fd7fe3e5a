"""health: the studio's public health report.

HTTP    GET /health   -> 200 {"status": "ok", "failing": [], "components": {name: {"status"}}} when every
                         component is fine, 503 naming the failing ones. That is all anyone sees; the
                         operator (Authorization: Bearer $STUDIO_ADMIN_TOKEN) gets each component's
                         details too (paths, URLs, versions, function instances, every durable
                         consumer's lag, every Ollama node with its models and answers in flight,
                         how to fix it).
Events  listens  heartbeat.emitted (which function instances are alive)
        emits    heartbeat.requested (at start-up, so the report is complete at once)
Asks    chat.nodes (the operator's report: answers in flight per Ollama node, fallback answers)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
from aiohttp import web

from events.bus import BusUnavailable
from events.catalog import HeartbeatEmitted, HeartbeatRequested
from functions.health.checks import (
    Check,
    Liveness,
    check_consumers,
    check_database,
    check_disk,
    check_nats,
    check_ollama,
)
from studio.clients.ollama import OllamaClient
from studio.runtime.function import Function, Key
from studio.runtime.identity import identity


class Component(msgspec.Struct):
    status: Literal["ok", "warn", "fail"]


class Health(msgspec.Struct):
    status: Literal["ok", "fail"]
    failing: list[str]
    components: dict[str, Component]
    checked_at: str = ""


function = Function(
    "health", uses_database=True, publishes=("heartbeat.requested",), asks=("chat.nodes",), reads_stream=True
)

OLLAMA = Key[list[OllamaClient]]("ollama")
LIVENESS = Key[Liveness]("liveness")


@function.resource
async def dependencies(fn: Function) -> AsyncIterator[None]:
    fn[OLLAMA] = clients = [OllamaClient(url, request_timeout=2.0) for url in fn.settings.ollama_nodes]
    fn[LIVENESS] = Liveness(fn.settings.functions, fn.settings.heartbeat_s)
    await fn.publish(HeartbeatRequested(requested_by=fn.name))
    yield
    for client in clients:
        await client.close()


@function.listen(HeartbeatEmitted)
async def record_heartbeat(beat: HeartbeatEmitted) -> None:
    function[LIVENESS].saw(beat.function, beat.instance, time.monotonic())


@function.route(
    "GET",
    "/health",
    summary="Is the studio well? Anyone: the status and which components fail; the operator: each component's details",
    response=Health,
    answers=((503, Health),),
    timeout=10,
    visitor=False,
)
async def report_health(request: web.Request) -> web.Response:
    operator = identity(request).admin
    report = await health_report(operator=operator)
    status = 200 if report["status"] == "ok" else 503
    if not operator:
        report = public(report)
    return web.json_response(report, status=status)


async def chat_nodes() -> dict[str, Any] | None:
    """What the chat function counts (answers in flight per node, fallback answers), if it answers quickly."""
    try:
        return await function.bus.query("chat.nodes", {}, timeout=0.5)
    except (BusUnavailable, TimeoutError):
        return None


def public(report: dict[str, Any]) -> dict[str, Any]:
    """What a visitor may know: the status, and which component fails; no paths, URLs or names."""
    components = {name: {"status": c["status"]} for name, c in report["components"].items()}
    return {
        "status": report["status"],
        "failing": report["failing"],
        "checked_at": report["checked_at"],
        "components": components,
    }


async def health_report(*, operator: bool = False) -> dict[str, Any]:
    fn = function
    checks: tuple[Check, ...] = await asyncio.gather(
        check_nats(fn.bus),
        check_consumers(fn.bus, fn.settings.events_lag_alert_s, detail=operator),
        check_database(fn.db),
        check_ollama(fn[OLLAMA], chat_nodes() if operator else None),
        check_disk(fn.settings.data_dir, fn.settings.disk_min_free_mb),
    )
    components = {c.name: c.report for c in checks}
    components["functions"] = fn[LIVENESS].report(time.monotonic())
    failing = sorted(name for name, c in components.items() if c["status"] == "fail")
    return {
        "status": "fail" if failing else "ok",
        "failing": failing,
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "components": components,
    }
