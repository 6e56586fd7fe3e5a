"""The Stripe webhook: only verified events count, each once; bad input is a 4xx that changes nothing."""

from __future__ import annotations

import time

import pytest
import stripe

from studio.runtime.settings import Secret
from tests.functions.pipeline import start_studio


@pytest.fixture
async def paid_session(studio):
    body = await (await studio.client.post("/api/models/purchase/llama3.2:3b")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.pay(session_id)
    await studio.wait_for_event("purchase.created")  # in the stream: counts taken after it are stable
    return session_id


async def post_hook(studio, body: bytes, headers: dict[str, str]):
    resp = await studio.client.post("/api/webhooks/stripe", data=body, headers=headers)
    return resp.status, await resp.json()


@pytest.mark.parametrize("tamper", ["wrong_secret", "stale", "missing", "changed_body", "spaces"])
async def test_bad_signatures_are_400_and_change_nothing(studio, paid_session, tamper) -> None:
    event = studio.stripe.event("checkout.session.completed", dict(studio.stripe.sessions[paid_session]))
    body, headers = studio.stripe.signed(
        event,
        secret="whsec_someone_else" if tamper == "wrong_secret" else None,
        timestamp=int(time.time()) - 600 if tamper == "stale" else None,
    )
    if tamper == "missing":
        headers.pop("Stripe-Signature")
    elif tamper == "changed_body":
        body = body.replace(b'"paid"', b'"paid" ')
    elif tamper == "spaces":
        headers["Stripe-Signature"] = headers["Stripe-Signature"].replace(",", ", ")
    before = await studio.db_counts()

    status, answer = await post_hook(studio, body, headers)

    assert status == 400
    assert answer["error"]["code"] == "invalid_signature"
    assert await studio.db_counts() == before
    assert studio.of_type("payment.succeeded") == []


async def test_signed_but_not_an_event_is_400(studio) -> None:
    body, headers = studio.stripe.signed({"hello": "world"})
    status, answer = await post_hook(studio, body, headers)
    assert status == 400 and answer["error"]["code"] == "invalid_signature"


async def test_oversized_body_is_413_before_anything_is_read(studio) -> None:
    before = await studio.db_counts()
    resp = await studio.client.post(
        "/api/webhooks/stripe",
        data=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=x"},
    )
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"
    assert await studio.db_counts() == before


async def test_events_the_studio_does_not_need_are_acknowledged(studio) -> None:
    event = studio.stripe.event("customer.created", {"id": "cus_1", "object": "customer"})
    statuses = await studio.stripe.send(studio.url("/api/webhooks/stripe"), event)
    assert statuses == [200]


async def test_a_redelivery_is_recognised(studio, paid_session) -> None:
    event = studio.stripe.event("checkout.session.completed", dict(studio.stripe.sessions[paid_session]))
    body, headers = studio.stripe.signed(event)

    first = await post_hook(studio, body, headers)
    second = await post_hook(studio, *studio.stripe.signed(event))  # freshly signed, as Stripe retries

    assert first == (200, {"received": True, "outcome": "payment.succeeded"})
    assert second[1]["duplicate"] is True
    await studio.wait_for_event("purchase.completed", "llama3.2:3b")
    assert len(studio.of_type("payment.succeeded")) == 1


async def test_unpaid_completion_waits_for_the_async_payment(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    hook = studio.url("/api/webhooks/stripe")
    studio.stripe.sessions[session_id].update(status="complete", payment_status="unpaid")

    assert await studio.stripe.deliver(hook, "checkout.session.completed", session_id) == [200]
    assert (await studio.model("phi3:mini"))["owned"] is False

    studio.stripe.pay(session_id)
    assert await studio.stripe.deliver(hook, "checkout.session.async_payment_succeeded", session_id) == [200]
    await studio.wait_for_event("purchase.completed", "phi3:mini")


async def test_without_a_webhook_secret_stripe_is_told_to_retry(
    embedded_studio, settings, ollama, stripe_api, bus
) -> None:
    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, stripe_webhook_secret=Secret(""))
    body, headers = studio.stripe.signed(studio.stripe.event("customer.created", {"id": "cus_1"}))
    status, answer = await post_hook(studio, body, headers)
    assert status == 503 and answer["error"]["code"] == "webhooks_not_configured"


@pytest.mark.parametrize("depth", [100, 1000, 5000])
async def test_a_signed_event_nested_deep_is_400_and_changes_nothing(studio, depth) -> None:
    nested = "[" * depth + "]" * depth  # what no parser stack (and no Stripe event) holds
    body = (
        '{"id": "evt_deep", "type": "checkout.session.completed", "data": {"object": {"id": "cs_deep", "x": '
        + nested
        + "}}}"
    )
    header = stripe.WebhookSignature.generate_signature_header(body, studio.stripe.webhook_secret)
    before = await studio.db_counts()
    status, answer = await post_hook(studio, body.encode(), {"Stripe-Signature": header})
    assert status == 400 and answer["error"]["code"] == "invalid_signature", answer
    assert "nested deeper" in answer["error"]["message"]
    assert await studio.db_counts() == before
