"""Consumer lag, seen the ways an operator sees it: metrics, the alert webhook, /health, the command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

from events.bus import Bus
from events.delivery import Delivery
from events.envelope import Event
from functions import load
from studio.runtime.settings import Secret
from tests.functions.monitor.test_monitor import OPERATOR, scrape
from tests.support import Recorder, SampleRecorded, eventually

CLI = str(Path(sys.executable).parent / "localai-studio")
LAGGING = "tests__lagging"


# `localai-studio events consumers`, a process of its own, reads the lags from the same server.
pytestmark = pytest.mark.nats


def sample(n: int) -> Event:
    data = SampleRecorded(n=n)
    return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject)


async def alert_receiver(aiohttp_server) -> tuple[list[str], str]:
    texts: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        texts.append((await request.json())["text"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks/alerts", receive)
    server = await aiohttp_server(app)
    return texts, str(server.make_url("/hooks/alerts"))


def gauge(metrics: dict, name: str, consumer: str) -> float | None:
    return metrics.get((name, (("consumer", consumer),)))


async def events_consumers(nats_url: str, *args: str, status: int = 0) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "events",
        "consumers",
        *args,
        env={**env, "STUDIO_NATS_URL": nats_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == status, out.decode()
    return out.decode()


async def test_a_paused_consumer_shows_in_metrics_health_and_the_command_and_alerts_then_resolves(
    embedded_studio, settings, bus: Bus, nats_server, aiohttp_server
) -> None:
    texts, url = await alert_receiver(aiohttp_server)
    client = await embedded_studio(
        [load("monitor"), load("health")],
        settings_override=settings.replace(
            alert_webhook_url=url, admin_token=Secret("op"), events_lag_alert_s=1.0, functions=("monitor", "health")
        ),
    )
    raised = Recorder()
    await bus.listen("consumer.*", raised)
    applied: list[int] = []

    async def project(deliveries: list[Delivery]) -> None:
        applied.extend(d.data.n for d in deliveries)

    consumer = await bus.consume(LAGGING, [SampleRecorded.TYPE], project, batch_size=64)
    consumer.pause()
    await bus.publish_many([sample(n) for n in range(25)])

    # behind: the metrics, the alert (an event and the webhook), the operator's /health, the command
    metrics = await eventually(
        lambda: _scrape_if(
            client, lambda m: (gauge(m, "studio_events_consumer_oldest_pending_seconds", LAGGING) or 0) > 1
        ),
        message="the lag in the metrics",
    )
    assert gauge(metrics, "studio_events_consumer_pending", LAGGING) == 25
    assert gauge(metrics, "studio_events_consumer_ack_pending", LAGGING) == 0
    assert gauge(metrics, "studio_events_consumer_redelivered", LAGGING) == 0
    await eventually(lambda: any(LAGGING in t and "behind" in t for t in texts), message="the lag alert")
    assert [e.type for e in raised.items] == ["consumer.fell_behind"]
    assert raised.items[0].data["consumer"] == LAGGING and raised.items[0].data["pending"] == 25

    report = await (await client.get("/health", headers=OPERATOR)).json()
    consumers = report["components"]["consumers"]
    assert consumers["status"] == "warn" and consumers["behind"] == [LAGGING]
    assert consumers["consumers"][LAGGING]["pending"] == 25
    public = await (await client.get("/health")).json()
    assert "consumers" not in public["components"]["consumers"], "the figures are the operator's"

    printed = await events_consumers(nats_server.url)
    header, *rows = printed.splitlines()
    assert header.split()[:3] == ["consumer", "pending", "ack"]
    row = next(r for r in rows if r.startswith(LAGGING)).split()
    assert row[1:4] == ["25", "0", "0"] and row[4].endswith("s")

    # caught up: the resolved alert, the metrics back to zero
    consumer.resume()
    await eventually(lambda: len(applied) == 25, message="the backlog applied")
    await eventually(lambda: any("resolved" in t and LAGGING in t for t in texts), message="the resolved alert")
    assert [e.type for e in raised.items] == ["consumer.fell_behind", "consumer.caught_up"]
    metrics = await eventually(
        lambda: _scrape_if(client, lambda m: gauge(m, "studio_events_consumer_pending", LAGGING) == 0),
        message="no backlog in the metrics",
    )
    assert gauge(metrics, "studio_events_consumer_oldest_pending_seconds", LAGGING) == 0
    assert gauge(metrics, "studio_events_consumer_behind", LAGGING) == 0


async def test_a_consumer_no_handler_uses_any_more_can_be_removed(bus: Bus, nats_server) -> None:
    left_behind = await bus.consume("tests__renamed_handler", [SampleRecorded.TYPE], Recorder())
    await left_behind.stop(1)
    assert "tests__renamed_handler" in await events_consumers(nats_server.url)

    assert "removed tests__renamed_handler" in await events_consumers(
        nats_server.url, "--remove", "tests__renamed_handler"
    )

    assert "tests__renamed_handler" not in await events_consumers(nats_server.url)
    refused = await events_consumers(nats_server.url, "--remove", "tests__renamed_handler", status=1)
    assert "no consumer named 'tests__renamed_handler'" in refused


async def _scrape_if(client, predicate):
    metrics = await scrape(client)
    return metrics if predicate(metrics) else None
