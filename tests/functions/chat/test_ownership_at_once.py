"""Read your own purchase: a purchase answered 200 (or settled by a webhook) is chattable on the very
next request, whatever chat's projection has seen; a refund is refused as soon as its event is heard,
before the projection applies it (entitlements.py: it takes effect within the consumers' lag)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from functions import load
from functions.chat.entitlements import owns
from studio import catalog
from tests.functions.pipeline import pipeline_settings
from tests.support import eventually

FUNCTIONS = ("purchase", "install", "webhook", "chat")
PAID = "llama3.2:3b"
PROJECTION = "chat__track_ownership"


async def start(embedded_studio, settings, ollama, stripe_api, **changes: Any):
    s = pipeline_settings(
        settings, ollama, stripe_api, functions=FUNCTIONS, writes_per_address_per_minute=1_000_000, **changes
    )  # every buyer here is 127.0.0.1: the per-address limit is not what this is about
    return await embedded_studio([load(n) for n in FUNCTIONS], settings_override=s)


@contextlib.asynccontextmanager
async def visitor(client) -> AsyncIterator[aiohttp.ClientSession]:
    """A browser: its own cookie jar, and a first page visit for the session cookie."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(str(client.make_url("/api/models"))) as first:
            assert first.status == 200
        yield session


async def chat_status(session: aiohttp.ClientSession, url: str, model: str) -> int:
    async with session.post(url, json={"model": model, "message": "Hello"}) as resp:
        await resp.read()
        return resp.status


@pytest.fixture
def paid_models() -> list[str]:
    return [m.id for m in catalog.load() if not m.free]


@pytest.mark.slow  # a load test: buyers and chats at once, ~6 s of CPU per database
async def test_buyers_who_chat_right_after_their_200_are_never_refused_under_load(
    embedded_studio, settings, ollama, stripe_api, paid_models
) -> None:
    ollama.preinstall(*paid_models)  # installs are no-ops: every answer can be a 200
    client = await start(embedded_studio, settings, ollama, stripe_api, skip_payment=True)
    buy_url, chat_url = str(client.make_url("/api/models/purchase/")), str(client.make_url("/api/chat"))
    done = asyncio.Event()
    bought = 0

    async def keep_buying() -> None:  # one of 16 visitors buying everything, again and again
        nonlocal bought
        while not done.is_set():
            async with visitor(client) as session:
                for model in paid_models:
                    async with session.post(buy_url + model) as resp:
                        assert resp.status == 200, await resp.text()
                        bought += 1

    async def buy_then_chat(model: str) -> tuple[int, int]:
        async with visitor(client) as session:
            async with session.post(buy_url + model) as resp:
                purchased = resp.status
            return purchased, await chat_status(session, chat_url, model)

    buyers = [asyncio.create_task(keep_buying()) for _ in range(16)]
    try:
        await eventually(lambda: bought >= 100, timeout=30, message="the buyers under way")
        results = []
        for i in range(20):  # one after another, while the 16 keep buying
            results.append(await buy_then_chat(paid_models[i % len(paid_models)]))
    finally:
        done.set()
        await asyncio.gather(*buyers)

    assert [p for p, _ in results] == [200] * 20
    assert [c for _, c in results] == [200] * 20, f"refused right after buying: {results}"


async def test_a_settled_payment_counts_and_a_refund_is_refused_once_heard_whatever_the_projection_saw(
    embedded_studio, settings, ollama, stripe_api
) -> None:
    ollama.preinstall(PAID)
    client = await start(embedded_studio, settings, ollama, stripe_api)
    projection = client.host_runtime.bus.consumer(PROJECTION)
    chat = load("chat")
    hook = str(client.make_url("/api/webhooks/stripe"))
    async with visitor(client) as session:

        async def purchase_status(purchase_id: str) -> str:
            async with session.get(str(client.make_url(f"/api/purchases/{purchase_id}"))) as resp:
                return (await resp.json())["status"]

        projection.pause()  # chat's projection sees nothing from here on
        async with session.post(str(client.make_url(f"/api/models/purchase/{PAID}"))) as resp:
            body = await resp.json()
        session_id = body["checkout_url"].rsplit("/", 1)[1]
        assert await chat_status(session, str(client.make_url("/api/chat")), PAID) == 403, "not paid yet"

        stripe_api.pay(session_id)
        assert await stripe_api.deliver(hook, "checkout.session.completed", session_id) == [200]
        await eventually(lambda: _is(purchase_status(body["purchase_id"]), "paid"), message="the payment settled")
        assert await chat_status(session, str(client.make_url("/api/chat")), PAID) == 200

        projection.resume()
        await eventually(lambda: _owned_by_anyone(chat), message="the projection learned of the purchase")
        projection.pause()  # the projection says owned, and will not hear of the refund

        await stripe_api.send(hook, stripe_api.refund_event(session_id))
        await eventually(lambda: _is(purchase_status(body["purchase_id"]), "refunded"), message="the refund settled")
        chat_url = str(client.make_url("/api/chat"))
        await eventually(lambda: _refused(chat_status(session, chat_url, PAID)), message="the refund heard by chat")

        projection.resume()
        await eventually(lambda: _not(_owned_by_anyone(chat)), message="the projection caught up with the refund")


async def test_a_disputed_purchase_is_owned_nowhere_while_the_dispute_is_open(
    embedded_studio, settings, ollama, stripe_api
) -> None:
    """Issue 21: /api/models, the purchase function's answer to chat, chat itself and /v1/models agree."""
    ollama.preinstall(PAID)
    client = await start(embedded_studio, settings, ollama, stripe_api)
    bus = client.host_runtime.bus
    hook = str(client.make_url("/api/webhooks/stripe"))
    chat_url = str(client.make_url("/api/chat"))
    async with visitor(client) as session:
        async with session.post(str(client.make_url(f"/api/models/purchase/{PAID}"))) as resp:
            body = await resp.json()
        session_id = body["checkout_url"].rsplit("/", 1)[1]
        stripe_api.pay(session_id)
        assert await stripe_api.deliver(hook, "checkout.session.completed", session_id) == [200]
        await eventually(lambda: _listed(session, client, PAID), message="the purchase owned")
        assert await chat_status(session, chat_url, PAID) == 200  # chat remembers it from here on

        dispute = stripe_api.dispute(session_id)
        assert await stripe_api.send(hook, stripe_api.event("charge.dispute.created", dispute)) == [200]
        await eventually(lambda: _not(_owned_in_models(session, client)), message="/api/models says not owned")

        await eventually(lambda: _refused(chat_status(session, chat_url, PAID)), message="chat refuses it")
        assert not await _listed(session, client, PAID), "/v1/models lists a suspended purchase"
        owner = await _buyer(client)
        assert (await bus.query("purchases.owns", {"user_id": owner, "model": PAID}))["owns"] is False


async def _owned_in_models(session: aiohttp.ClientSession, client) -> bool:
    async with session.get(str(client.make_url("/api/models"))) as resp:
        models = (await resp.json())["models"]
    return next(m for m in models if m["id"] == PAID)["owned"]


async def _listed(session: aiohttp.ClientSession, client, model: str) -> bool:
    async with session.get(str(client.make_url("/v1/models"))) as resp:
        assert resp.status == 200, await resp.text()
        return model in [m["id"] for m in (await resp.json())["data"]]


async def _buyer(client) -> str:
    purchase = load("purchase")
    row = await purchase.db.fetch_one("SELECT user_id FROM purchases WHERE model = ?", (PAID,))
    assert row is not None
    return str(row["user_id"])


async def _is(status, expected: str) -> bool:
    return await status == expected


async def _refused(status) -> bool:
    return await status == 403


async def _not(awaitable) -> bool:
    return not await awaitable


async def _owned_by_anyone(chat) -> bool:
    row = await chat.db.fetch_one("SELECT user_id FROM chat_ownership WHERE model = ? AND revoked = 0", (PAID,))
    return row is not None and await owns(chat.db, row["user_id"], PAID)
