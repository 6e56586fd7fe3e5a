"""Alerts: the monitor posts Slack-compatible JSON to STUDIO_ALERT_WEBHOOK_URL for failure events.

A real monitor function on a real NATS; the webhook is a small local HTTP receiver.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from events.catalog import EventDeadLettered, InstallFailed
from events.envelope import Event
from functions import load
from tests.support import eventually


class Receiver:
    """A Slack-style incoming webhook: records every JSON body; can refuse the first few."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.refused = 0
        self.refuse_first = refuse_first

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.refused < self.refuse_first:
            self.refused += 1
            return web.Response(status=503, text="try later")
        self.bodies.append(body)
        return web.Response(text="ok")


@pytest.fixture
async def receiver(aiohttp_server):
    async def start(refuse_first: int = 0) -> tuple[Receiver, str]:
        rec = Receiver(refuse_first)
        app = web.Application()
        app.router.add_post("/hooks/alerts", rec.handle)
        server = await aiohttp_server(app)
        return rec, str(server.make_url("/hooks/alerts"))

    return start


def event(data, **envelope) -> Event:
    return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject, **envelope)


def install_failed(model: str, *, will_retry: bool) -> InstallFailed:
    return InstallFailed(
        install_id=f"ins_{model}", model=model, reason="pull failed: unexpected EOF", will_retry=will_retry, attempt=3
    )


async def test_final_install_failure_and_dead_letter_are_alerted_once(embedded_studio, settings, bus, receiver) -> None:
    rec, url = await receiver()
    await embedded_studio(
        [load("monitor")],
        settings_override=settings.replace(alert_webhook_url=url, public_url="https://studio.example"),
    )

    await bus.publish(event(install_failed("qwen2.5:0.5b", will_retry=True)))  # retried: no alert
    await bus.publish(event(install_failed("llama3.2:1b", will_retry=False)))
    await bus.publish(
        event(
            EventDeadLettered(
                event_id="evt_1",
                event_type="purchase.completed",
                consumer="install__install_purchased_model",
                attempts=5,
                reason="attempts_exhausted",
                error="OllamaError: boom",
            )
        )
    )

    await eventually(lambda: len(rec.bodies) >= 2, message="two alerts")
    texts = sorted(b["text"] for b in rec.bodies)
    assert all(set(b) == {"text"} for b in rec.bodies)  # Slack's incoming-webhook shape
    assert "llama3.2:1b" in texts[1] and "failed for good" in texts[1] and "https://studio.example" in texts[1]
    assert "install__install_purchased_model" in texts[0] and "purchase.completed" in texts[0]
    assert not any("qwen2.5" in t for t in texts)


async def test_alert_is_retried_until_the_webhook_takes_it(embedded_studio, settings, bus, receiver) -> None:
    rec, url = await receiver(refuse_first=2)
    await embedded_studio([load("monitor")], settings_override=settings.replace(alert_webhook_url=url))

    await bus.publish(event(install_failed("gemma2:2b", will_retry=False)))

    await eventually(lambda: rec.bodies, timeout=20, message="the alert after two refusals")
    assert rec.refused == 2 and len(rec.bodies) == 1 and "gemma2:2b" in rec.bodies[0]["text"]


async def test_old_events_replayed_from_the_stream_are_not_alerted(embedded_studio, settings, bus, receiver) -> None:
    rec, url = await receiver()
    old = (datetime.now(UTC) - timedelta(hours=5)).isoformat().replace("+00:00", "Z")
    await bus.publish(event(install_failed("phi3:mini", will_retry=False), time=old))
    await embedded_studio([load("monitor")], settings_override=settings.replace(alert_webhook_url=url))

    await bus.publish(event(install_failed("mistral:7b", will_retry=False)))  # a fresh one, as a marker

    await eventually(lambda: rec.bodies, message="the fresh alert")
    assert [("mistral:7b" in b["text"]) for b in rec.bodies] == [True]
