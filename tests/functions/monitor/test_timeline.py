"""The operator's purchase timeline (stored events by correlation id) and live tail (server-sent events)."""

from __future__ import annotations

import asyncio
import json

from functions import load
from tests.functions.pipeline import OPERATOR, PIPELINE, Studio, pipeline_settings


async def start(embedded_studio, settings, ollama, stripe_api, bus) -> Studio:
    s = pipeline_settings(settings, ollama, stripe_api)
    client = await embedded_studio([load(n) for n in (*PIPELINE, "monitor")], settings_override=s)
    studio = Studio(client=client, bus=bus, ollama=ollama, stripe=stripe_api)
    for pattern in ("purchase.*", "install.*", "payment.*"):
        await bus.listen(pattern, studio.events)
    assert (await client.get("/")).status in (200, 404)
    return studio


async def test_a_purchase_timeline_runs_from_the_click_to_the_install(
    embedded_studio, settings, ollama, stripe_api, bus
) -> None:
    studio = await start(embedded_studio, settings, ollama, stripe_api, bus)
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.pay(session_id)
    await studio.stripe.deliver(studio.url("/api/webhooks/stripe"), "checkout.session.completed", session_id)
    await studio.wait_for_event("install.completed", "phi3:mini")
    await studio.client.post("/api/models/purchase/tinyllama:latest")  # someone else's story
    await studio.wait_for_event("install.completed", "tinyllama:latest")

    resp = await studio.client.get(f"/api/monitor/timeline?purchase_id={body['purchase_id']}", headers=OPERATOR)

    types = [e["type"] for e in (await resp.json())["events"]]
    assert types[0] == "purchase.created" and types[-1] == "install.completed"
    for kind in ("payment.succeeded", "purchase.completed", "install.started"):
        assert kind in types
    assert all(e["data"].get("model") in (None, "phi3:mini") for e in (await resp.json())["events"])
    bad = await studio.client.get("/api/monitor/timeline", headers=OPERATOR)
    assert bad.status == 400


async def test_the_live_tail_streams_events_as_they_happen_filtered(
    embedded_studio, settings, ollama, stripe_api, bus
) -> None:
    studio = await start(embedded_studio, settings, ollama, stripe_api, bus)
    resp = await studio.client.get("/api/monitor/stream?type=install.", headers=OPERATOR)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")

    await studio.client.post("/api/models/purchase/tinyllama:latest")

    seen: list[str] = []

    async def read_until_completed() -> None:
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                seen.append(json.loads(line[6:])["type"])
                if seen[-1] == "install.completed":
                    return

    await asyncio.wait_for(read_until_completed(), timeout=15)
    assert all(t.startswith("install.") for t in seen) and "install.started" in seen
    resp.close()
    visitor = await studio.client.get("/api/monitor/stream")
    assert visitor.status in (401, 403)
