"""The "when to scale" signals: each one driven over its threshold (STUDIO_SCALE_*, lowered here) raises
an alert that names the threshold and what to do, and shows in the metrics. The inputs are driven
(visitors, open answers, chat outcomes, a server's CPU report), never the clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from events.bus import Bus
from events.catalog import ChatCompleted, ServerReported
from events.envelope import Event
from functions import load
from functions.monitor.scale import ScaleSignals, Thresholds, episode_id
from gateway.session import COOKIE, Sessions
from studio.runtime.settings import Secret, Settings
from tests.doubles.ollama import OllamaDouble
from tests.functions.monitor.test_consumer_lag import alert_receiver
from tests.functions.monitor.test_monitor import scrape
from tests.support import eventually

FREE = "tinyllama:latest"


async def publish(bus: Bus, data: Any) -> None:
    await bus.publish(Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject))


def metric(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


async def monitored(embedded_studio, settings: Settings, url: str, fns: list[str], **changes: Any):
    return await embedded_studio(
        [load(f) for f in fns],
        settings_override=settings.replace(
            alert_webhook_url=url, admin_token=Secret("op"), functions=tuple(fns), **changes
        ),
    )


async def test_more_visitors_than_the_threshold_alert_to_add_a_server(embedded_studio, settings, aiohttp_server):
    texts, url = await alert_receiver(aiohttp_server)
    client = await monitored(embedded_studio, settings, url, ["monitor"], scale_visitors=5)
    sessions = Sessions(settings.cookie_key())
    for _ in range(6):  # six returning visitors (their cookies verify), one request each
        _, cookie = sessions.issue()
        resp = await client.get("/api/openapi.json", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert resp.status == 200

    text = await eventually(lambda: next((t for t in texts if "visitors" in t), None), message="the visitors alert")
    assert "concurrent visitors is 6, over the threshold of 5 (STUDIO_SCALE_VISITORS)" in text
    assert "add a server behind the load balancer" in text and "Several servers" in text
    metrics = await scrape(client)
    assert metric(metrics, "studio_scale_visitors") == 6
    assert metric(metrics, "studio_scale_threshold", signal="visitors") == 5
    assert metric(metrics, "studio_scale_over_threshold", signal="visitors", key="") == 1


async def test_answers_waiting_on_an_ollama_node_alert_to_add_a_node(embedded_studio, settings, aiohttp_server):
    texts, url = await alert_receiver(aiohttp_server)
    async with OllamaDouble(installed=[FREE], tokens_per_s=2, reply="word " * 200) as ollama:
        client = await monitored(
            embedded_studio, settings, url, ["chat", "monitor"], ollama_url=ollama.url, scale_queue_depth=2
        )
        sessions = Sessions(settings.cookie_key())

        async def answer() -> None:  # one visitor's answer, read slowly until the test ends it
            _, cookie = sessions.issue()
            body = json.dumps({"model": FREE, "message": "Hello", "stream": True}).encode()
            headers = {"Cookie": f"{COOKIE}={cookie}", "Content-Type": "application/json"}
            resp = await client.post("/api/chat", data=body, headers=headers)
            assert resp.status == 200, await resp.text()
            async for _ in resp.content:
                pass

        answers = [asyncio.create_task(answer()) for _ in range(3)]
        try:
            text = await eventually(
                lambda: next((t for t in texts if "Ollama node" in t), None), timeout=20, message="the queue alert"
            )
            assert f"answers waiting on Ollama node {ollama.url} is 3, over the threshold of 2" in text
            assert "(STUDIO_SCALE_QUEUE_DEPTH)" in text and "add an Ollama node (STUDIO_OLLAMA_URLS" in text
            metrics = await scrape(client)
            assert metric(metrics, "studio_ollama_queue_depth", node=ollama.url) == 3
            chat_inflight = [
                v
                for (name, labels), v in metrics.items()
                if name == "studio_function_inflight" and ("function", "chat") in labels
            ]
            assert chat_inflight == [3]  # what a drained server's operator waits to see reach 0
        finally:
            for task in answers:
                task.cancel()
            for task in answers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_chat_requests_a_second_over_the_threshold_alert(embedded_studio, settings, aiohttp_server, bus):
    texts, url = await alert_receiver(aiohttp_server)
    client = await monitored(embedded_studio, settings, url, ["monitor"], scale_chat_per_s=5)
    for i in range(60):  # sixty answers within the ten-second window: six a second
        await publish(
            bus,
            ChatCompleted(
                model=FREE,
                user_id=f"v{i}",
                prompt_tokens=3,
                completion_tokens=5,
                time_to_first_token_ms=10.0,
                duration_ms=50.0,
                tokens_per_s=100.0,
                done_reason="stop",
            ),
        )
    text = await eventually(lambda: next((t for t in texts if "chat requests" in t), None), message="the chat alert")
    assert "chat requests a second is 6, over the threshold of 5 (STUDIO_SCALE_CHAT_PER_S)" in text
    assert (await scrape(client)).get(("studio_scale_chat_requests_per_second", ())) is not None


async def test_a_busy_server_cpu_alerts_and_names_the_server(embedded_studio, settings, aiohttp_server, bus):
    texts, url = await alert_receiver(aiohttp_server)
    client = await monitored(embedded_studio, settings, url, ["monitor"], scale_cpu_percent=80)
    await publish(bus, ServerReported(server="vps-2", instance="gw-vps-2", visitors=3, cpu_percent=95.0))
    # (this machine's own CPU may cross too: its gateway reports it; the alert looked for is vps-2's)
    text = await eventually(lambda: next((t for t in texts if "vps-2" in t), None), message="the CPU alert")
    assert "CPU % on server vps-2 is 95, over the threshold of 80 (STUDIO_SCALE_CPU_PERCENT)" in text
    metrics = await scrape(client)
    assert metric(metrics, "studio_server_cpu_percent", server="vps-2") == 95


def test_a_signal_alerts_once_per_crossing_and_every_replica_names_it_alike() -> None:
    signals = ScaleSignals(Thresholds(visitors=10), stale_s=30)
    report = {"server": "vps-1", "instance": "gw-1", "visitors": 11, "cpu_percent": 10.0}
    signals.server_reported(report, now=0.0)
    first = signals.check(now=1.0, wall=1000.0)
    assert [(d.signal, d.value) for _, d in first] == [("visitors", 11.0)]
    assert signals.check(now=2.0, wall=1001.0) == []  # still over: no second alert
    signals.server_reported({**report, "visitors": 9}, now=3.0)
    assert signals.check(now=4.0, wall=1003.0) == []  # back under
    signals.server_reported(report, now=5.0)
    assert [d.signal for _, d in signals.check(now=6.0, wall=1005.0)] == ["visitors"]  # over again: alerts
    assert first[0][0] == episode_id("visitors", "", 1000.0) == episode_id("visitors", "", 1001.0)
    signals.server_reported({**report, "instance": "gw-2", "visitors": 5}, now=40.0)
    assert signals.visitors(now=40.0) == 5  # gw-1 went silent 35 s ago: it no longer counts

    other_replica = ScaleSignals(Thresholds(visitors=10), stale_s=30)  # another server's monitor, seconds later
    other_replica.server_reported(report, now=100.0)
    assert [i for i, _ in other_replica.check(now=101.0, wall=1004.0)] == [first[0][0]]  # stored once
