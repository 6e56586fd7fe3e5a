"""monitor: watches every event; counters, rates, a recent-events log and Prometheus metrics.

HTTP    GET /metrics                      -> Prometheus text: events, rates, every function's HTTP
                                             requests and latencies, instance liveness, chat usage
                                             per model (answers, tokens, time to first token),
                                             each durable consumer's lag (consumers.py)
        GET /api/monitor/events?type=&limit=  -> the latest events, newest last (operator)
        GET /api/monitor/stats            -> totals and rates per event type (operator), and chat answers
                                             and tokens per model since the monitor started
        GET  /api/monitor/stream?type=&correlation_id= -> every event live, server-sent (operator): the
                                          latest 50 matching first, then each as it happens
        GET  /api/monitor/timeline?purchase_id=|correlation_id= -> a purchase's stored events, from the
                                          click to the install (operator)
        GET  /api/monitor/dead-letters    -> every dead letter the stream keeps, newest first (operator)
        POST /api/monitor/dead-letters/{event_id}/redrive, POST /api/monitor/dead-letters/redrive
                                          -> put one (or every pending) dead-lettered event back (operator)
Events  listens  * (every event on the bus, durable and live)
        consumes install.failed, event.dead_lettered, consumer.fell_behind, consumer.caught_up
                 -> alerts to STUDIO_ALERT_WEBHOOK_URL (alerts.py)
        listens  resource.exhausted, resource.recovered -> alerts too (live: a full disk cannot store them)
        listens  server.reported, heartbeat.emitted, chat.* -> the "when to scale" signals (scale.py)
        consumes scale.threshold_crossed -> an alert saying which threshold and what to do
        emits    consumer.fell_behind, consumer.caught_up (STUDIO_EVENTS_LAG_ALERT_S),
                 scale.threshold_crossed (STUDIO_SCALE_*), operator.dead_letter_redriven
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from events.bus import BusUnavailable
from events.catalog import (
    ConsumerCaughtUp,
    ConsumerFellBehind,
    EventData,
    EventDeadLettered,
    HeartbeatEmitted,
    InstallFailed,
    ResourceExhausted,
    ResourceRecovered,
    ScaleThresholdCrossed,
    ServerReported,
)
from events.delivery import Delivery, Retry
from events.envelope import Event
from functions.monitor.alerts import MAX_AGE_S, AlertWebhook, ShortageAlerts, age_s, alert_text
from functions.monitor.consumers import ConsumerWatch
from functions.monitor.contract import Events, EventsQuery, Redriven, Stats, TailQuery, TimelineQuery
from functions.monitor.dead_letters import UnknownDeadLetter, dead_letters, redrive
from functions.monitor.exposition import StudioCollector
from functions.monitor.observations import CHAT_OUTCOMES, ChatUsage, EventCounts, FunctionReports, RecentEvents
from functions.monitor.scale import ScaleSignals, Thresholds
from functions.monitor.scale import alert_text as scale_alert_text
from functions.monitor.tails import SSE_HEADERS, LiveTails, Tail, sse, timeline
from studio.runtime.errors import BadRequest, NotFound
from studio.runtime.function import Function, Key
from studio.runtime.identity import require_admin
from studio.runtime.routes import KIB

function = Function(
    "monitor",
    publishes=(
        "consumer.fell_behind",
        "consumer.caught_up",
        "scale.threshold_crossed",
        "operator.dead_letter_redriven",
    ),
    redrives=True,  # reads dead letters and consumer lag; a redrive puts a stored event back
)
log = logging.getLogger("studio.functions.monitor")

COUNTS = Key[EventCounts]("counts")
RECENT = Key[RecentEvents]("recent")
REPORTS = Key[FunctionReports]("reports")
REGISTRY = Key[CollectorRegistry]("registry")
CHAT = Key[ChatUsage]("chat")
ALERTS = Key[AlertWebhook]("alerts")
SHORTAGES = Key[ShortageAlerts]("shortages")
RETRIES = Key[set[asyncio.Task[None]]]("alert_retries")
CONSUMERS = Key[ConsumerWatch]("consumers")
TAILS = Key[LiveTails]("tails")
SCALE = Key[ScaleSignals]("scale")


@function.resource
async def observations(fn: Function) -> AsyncIterator[None]:
    fn[COUNTS], fn[RECENT], fn[REPORTS], fn[CHAT] = EventCounts(), RecentEvents(), FunctionReports(), ChatUsage()
    fn[CONSUMERS] = watch = ConsumerWatch(fn.bus, fn.settings.events_lag_alert_s, publish_once)
    fn[SCALE] = scale = ScaleSignals(Thresholds.of(fn.settings), stale_s=max(30.0, 6 * fn.settings.heartbeat_s))
    fn[REGISTRY] = registry = CollectorRegistry(auto_describe=False)
    registry.register(StudioCollector(fn[COUNTS], fn[REPORTS], fn.settings.heartbeat_s, fn[CHAT], watch, scale))
    fn[ALERTS] = webhook = AlertWebhook(fn.settings.alert_webhook_url)
    fn[SHORTAGES] = ShortageAlerts()
    fn[RETRIES] = retries = set[asyncio.Task[None]]()
    fn[TAILS] = tails = LiveTails()
    watching = asyncio.create_task(watch.run(every_s=fn.settings.heartbeat_s), name="monitor:consumer-lag")
    scaling = asyncio.create_task(watch_scale(scale, fn.settings.heartbeat_s), name="monitor:scale")
    yield
    tails.close()
    for task in (watching, scaling):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in list(retries):
        task.cancel()
    await webhook.close()


@function.listen("*", envelope=True)
async def observe_event(event: Event) -> None:
    function[COUNTS].add(event.type, time.time())
    if not event.type.startswith("heartbeat."):
        function[TAILS].offer(event)
    if event.type == HeartbeatEmitted.TYPE:
        function[REPORTS].update(event.data, time.monotonic())
        function[SCALE].heartbeat(event.data, time.monotonic())
    elif event.type == ServerReported.TYPE:
        function[SCALE].server_reported(event.data, time.monotonic())
    elif not event.type.startswith("heartbeat."):
        function[RECENT].add(event)
        if event.type.startswith("chat."):
            function[CHAT].add(event.type, event.data)
            if event.type in CHAT_OUTCOMES:
                function[SCALE].chat_answered(time.monotonic())


async def publish_once(data: EventData, event_id: str) -> None:
    """Publish under an id every monitor replica gives the same fact: JetStream keeps one of them."""
    await function.bus.publish(dataclasses.replace(function.event(data), id=event_id))


async def watch_scale(scale: ScaleSignals, every_s: float) -> None:
    """Weigh the signals every heartbeat; a crossing is published under its episode's id (see scale.py)."""
    while True:
        await asyncio.sleep(every_s)
        for event_id, data in scale.check(time.monotonic(), time.time()):
            log.warning("scale threshold crossed", extra={"signal": data.signal, "key": data.key, "value": data.value})
            try:
                await publish_once(data, event_id)
            except BusUnavailable:
                scale.over.discard((data.signal, data.key))  # not stored: try again at the next check


@function.subscribe(  # one replica posts each alert
    InstallFailed, EventDeadLettered, ConsumerFellBehind, ConsumerCaughtUp, ScaleThresholdCrossed, max_attempts=8
)
async def send_alert(
    data: InstallFailed | EventDeadLettered | ConsumerFellBehind | ConsumerCaughtUp | ScaleThresholdCrossed,
    delivery: Delivery,
) -> None:
    where = function.settings.public_url or "Local AI Studio"
    text = scale_alert_text(data, where) if isinstance(data, ScaleThresholdCrossed) else alert_text(data, where)
    if text and age_s(delivery.event.time) <= MAX_AGE_S:
        await function[ALERTS].post(text)


# Live (with the disk full nothing can be stored), and one monitor replica posts each, on whichever server.
@function.listen(ResourceExhausted, ResourceRecovered, one_replica=True)
async def alert_shortage(data: ResourceExhausted | ResourceRecovered) -> None:
    text = function[SHORTAGES].text(data, function.settings.public_url or "Local AI Studio", time.monotonic())
    if text:
        retries = function[RETRIES]
        task = asyncio.create_task(_post_until_delivered(text, data.kind))  # out of files: posts fail for a while
        retries.add(task)
        task.add_done_callback(retries.discard)


async def _post_until_delivered(text: str, kind: str, *, every_s: float = 5.0, tries: int = 120) -> None:
    for attempt in range(tries):
        try:
            await function[ALERTS].post(text)
            return
        except Retry as exc:
            if attempt == 0:
                log.warning("could not post a shortage alert yet: %s; retrying", exc, extra={"kind": kind})
            await asyncio.sleep(every_s)
    log.error("gave up posting a shortage alert", extra={"kind": kind, "text": text})


@function.route(
    "GET", "/metrics", summary="Prometheus metrics", response="text/plain", timeout=10, operator=True, visitor=False
)
async def serve_metrics(request: web.Request) -> web.Response:
    body = generate_latest(function[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@function.route(
    "GET",
    "/api/monitor/events",
    summary="The latest events on the bus",
    query=EventsQuery,
    response=Events,
    errors=(400,),
    timeout=10,
    operator=True,
)
async def list_recent_events(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise BadRequest("limit must be a whole number", code="invalid_limit") from None
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be between 1 and 1000", code="invalid_limit")
    type_prefix = request.query.get("type", "").rstrip("*") or None
    return web.json_response({"events": function[RECENT].latest(limit, type_prefix)})


@function.route("GET", "/api/monitor/stats", summary="Event counts by type", response=Stats, timeout=10, operator=True)
async def event_stats(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response({"events": function[COUNTS].summary(time.time()), "chat": function[CHAT].per_model()})


@function.route(
    "GET",
    "/api/monitor/dead-letters",
    summary="Events a consumer gave up on",
    response=dict[str, Any],
    timeout=30,
    max_body=4 * KIB,
    operator=True,
)
async def list_dead_letters(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response({"dead_letters": await dead_letters(function.bus)})


@function.route(
    "POST",
    "/api/monitor/dead-letters/{event_id}/redrive",
    summary="Deliver one dead letter again",
    response=Redriven,
    errors=(404,),
    timeout=30,
    max_body=4 * KIB,
    operator=True,
)
async def redrive_dead_letter(request: web.Request) -> web.Response:
    who = require_admin(request)
    try:
        letter = await redrive(function.bus, request.match_info["event_id"], operator_name(who), function.publish)
    except UnknownDeadLetter as exc:
        raise NotFound(str(exc), code="unknown_dead_letter") from None
    return web.json_response({"redriven": [letter["event_id"]]})


@function.route(
    "POST",
    "/api/monitor/dead-letters/redrive",
    summary="Deliver every dead letter again",
    response=Redriven,
    timeout=30,
    max_body=4 * KIB,
    operator=True,
)
async def redrive_every_dead_letter(request: web.Request) -> web.Response:
    who = require_admin(request)
    pending = {d["event_id"] for d in await dead_letters(function.bus) if not d["redriven_at"]}
    done = []
    for event_id in sorted(pending):
        try:
            await redrive(function.bus, event_id, operator_name(who), function.publish)
        except UnknownDeadLetter:
            continue
        done.append(event_id)
    return web.json_response({"redriven": done})


def operator_name(who: object) -> str:
    """Who acted: the operator's account when signed in with one, else the admin token."""
    return getattr(who, "account_id", None) or "admin token"


@function.route(
    "GET",
    "/api/monitor/stream",
    summary="The live event tail, filtered by type and correlation id",
    query=TailQuery,
    timeout=10,
    response="text/event-stream",
    operator=True,
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    tail = Tail(request.query.get("type", "").rstrip("*"), request.query.get("correlation_id", "").strip())
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    for event in function[RECENT].latest(1000):
        if tail.wants_dict(event):
            tail.backlog.append(event)
    await response.write(b"retry: 3000\n\n" + b"".join(sse(e) for e in tail.backlog[-50:]))
    await function[TAILS].relay(tail, response)
    return response


@function.route(
    "GET",
    "/api/monitor/timeline",
    summary="A purchase's events by correlation id",
    query=TimelineQuery,
    response=Events,
    errors=(400,),
    timeout=10,
    operator=True,
)
async def purchase_timeline(request: web.Request) -> web.Response:
    require_admin(request)
    purchase_id = request.query.get("purchase_id", "").strip()
    correlation_id = request.query.get("correlation_id", "").strip()
    if not (purchase_id or correlation_id):
        raise BadRequest("give purchase_id or correlation_id", code="invalid_timeline")
    events = await timeline(function.bus, purchase_id=purchase_id, correlation_id=correlation_id)
    return web.json_response({"events": [e.to_dict() for e in events]})
