"""GET /api/events: state first, then the visitor's own events live; reconnecting never loses progress."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.functions.pipeline import OPERATOR, start_studio


@pytest.fixture
async def test_mode(embedded_studio, settings, ollama, stripe_api, bus):
    return await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)


class Stream:
    """Reads server-sent events from a response."""

    def __init__(self, resp) -> None:
        self.resp = resp

    async def next(self, timeout: float = 15) -> tuple[str, Any]:
        event, data = "message", ""
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
            if not raw:
                raise AssertionError("the stream ended")
            line = raw.decode().rstrip("\n")
            if line == "" and data:
                return event, json.loads(data)
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]

    async def until(self, wanted: str, timeout: float = 15) -> tuple[list[tuple[str, Any]], Any]:
        seen = []
        while True:
            event, data = await self.next(timeout)
            seen.append((event, data))
            if event == wanted:
                return seen, data


async def open_stream(client, path: str = "/api/events", **kwargs) -> Stream:
    resp = await client.get(path, **kwargs)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["X-Accel-Buffering"] == "no"
    return Stream(resp)


async def test_stream_starts_with_state_then_my_purchase_and_install_live(test_mode) -> None:
    studio = test_mode
    stream = await open_stream(studio.client)
    event, state = await stream.next()
    assert event == "state"
    assert {m["id"] for m in state["models"]} >= {"tinyllama:latest", "llama3.2:3b"}

    await studio.client.post("/api/models/purchase/llama3.2:3b")

    seen, done = await stream.until("install.completed")
    kinds = [e for e, _ in seen]
    assert kinds[0] == "purchase.completed" and "install.started" in kinds and "install.progressed" in kinds
    assert done["data"]["model"] == "llama3.2:3b" and done["specversion"] == "1.0"


async def test_others_purchases_stay_private_but_the_operator_sees_them(test_mode) -> None:
    studio = test_mode
    mine = await open_stream(studio.client)
    operator = await open_stream(studio.client, headers=OPERATOR)
    await mine.next()
    await operator.next()

    async with studio.visitor() as stranger:
        await stranger.get(studio.url("/"))
        assert (await stranger.post(studio.url("/api/models/purchase/phi3:mini"))).status == 200
    await studio.client.post("/api/models/purchase/tinyllama:latest")

    _, completed = await mine.until("purchase.completed")
    assert completed["data"]["model"] == "tinyllama:latest", "the stranger's purchase is not in my stream"
    seen, _ = await operator.until("install.completed")
    while not {"phi3:mini", "tinyllama:latest"} <= {d["data"]["model"] for e, d in seen if e == "purchase.completed"}:
        more, _ = await operator.until("purchase.completed")
        seen += more


async def test_reconnecting_mid_install_starts_from_the_current_progress(test_mode) -> None:
    studio = test_mode
    first = await open_stream(studio.client)
    await first.next()
    studio.ollama.pull_speed = 20_000  # seconds: slow enough to reconnect in the middle
    await studio.client.post("/api/models/purchase/llama3.2:3b")
    _, progress = await first.until("install.progressed")
    first.resp.close()  # the visitor reloads the page

    second = await open_stream(studio.client)
    event, state = await second.next()
    studio.ollama.pull_speed = 0  # reconnected mid-way: the rest of the pull at once

    assert event == "state"
    model = next(m for m in state["models"] if m["id"] == "llama3.2:3b")
    assert model["owned"] is True
    install = model["install"]
    if install["state"] != "installed":  # not finished yet: the progress so far is in the state
        assert install["state"] in ("pulling", "verifying")
        assert install["percent"] >= progress["data"]["percent"]
        assert install["total_bytes"] > 0
    await second.until("install.completed")
