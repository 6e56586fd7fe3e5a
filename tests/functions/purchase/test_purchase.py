"""Buying models: test mode, free, Stripe Checkout; ownership; bad input changes nothing."""

from __future__ import annotations

import pytest

from studio import catalog
from tests.functions.pipeline import OPERATOR, start_studio
from tests.support import eventually

# The purchase-to-install pipeline end to end on a real nats-server (JetStream's stream, its durable
# consumers and the outbox relay as in production); the other pipeline tests use the in-memory bus.
pytestmark = pytest.mark.nats


@pytest.fixture
async def test_mode(embedded_studio, settings, ollama, stripe_api, bus):
    return await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)


def assert_progress_in_order(progressed) -> None:
    percents = [e.data["percent"] for e in progressed]
    assert percents == sorted(percents), f"progress went backwards: {percents}"
    for e in progressed:
        d = e.data
        assert d["phase"] in ("manifest", "downloading", "verifying", "writing")
        assert 0 <= d["completed_bytes"] <= d["total_bytes"] or d["total_bytes"] == 0


async def test_test_mode_purchase_ends_installed_with_progress_in_order(test_mode) -> None:
    studio = test_mode
    resp = await studio.client.post("/api/models/purchase/llama3.2:3b", headers={"X-Request-Id": "buy-1"})
    body = await resp.json()

    assert resp.status == 200
    assert body["status"] == "success" and body["message"] == "Test purchase successful"
    completed = await studio.wait_for_event("install.completed", "llama3.2:3b")
    kinds = [e.type for e in studio.events.items if e.data.get("model") == "llama3.2:3b"]
    assert kinds.index("purchase.completed") < kinds.index("install.started") < kinds.index("install.completed")
    progressed = studio.of_type("install.progressed", "llama3.2:3b")
    assert len(progressed) >= 2
    assert_progress_in_order(progressed)
    assert {e.correlationid for e in studio.events.items if e.data.get("model") == "llama3.2:3b"} == {"buy-1"}
    assert completed[0].data["digest"] and studio.ollama.is_installed("llama3.2:3b")

    model = await eventually(lambda: _installed(studio, "llama3.2:3b"), message="listed as installed")
    assert model["owned"] is True and model["install"]["state"] == "installed"


async def _installed(studio, model_id):
    model = await studio.model(model_id)
    return model if model["install"]["state"] == "installed" else None


async def test_free_model_is_owned_at_once_and_installs(studio) -> None:
    resp = await studio.client.post("/api/models/purchase/tinyllama:latest")
    body = await resp.json()

    assert resp.status == 200 and body["status"] == "success" and body["owned"] is True
    assert (await studio.model("tinyllama:latest"))["owned"] is True
    await studio.wait_for_event("install.completed", "tinyllama:latest")
    purchase = studio.of_type("purchase.completed")[0].data
    assert (purchase["kind"], purchase["amount_cents"]) == ("free", 0)
    assert studio.stripe.create_requests == [], "free models never reach Stripe"


async def test_stripe_checkout_then_signed_webhook_installs(studio) -> None:
    resp = await studio.client.post("/api/models/purchase/llama3.2:3b")
    body = await resp.json()

    assert resp.status == 200 and body["status"] == "checkout"
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    sent = studio.stripe.create_requests[0]
    assert sent["metadata"]["purchase_id"] == body["purchase_id"]
    assert sent["metadata"]["model"] == "llama3.2:3b" and sent["metadata"]["user_id"].startswith("v_")
    model = catalog.load().get("llama3.2:3b")
    assert model is not None and sent["line_items"][0]["price_data"]["unit_amount"] == str(model.price_cents)
    assert sent["success_url"].startswith("https://studio.test/marketplace?purchase=")
    assert studio.stripe.idempotency_keys == [f"checkout-{body['purchase_id']}"]
    assert (await studio.model("llama3.2:3b"))["owned"] is False, "pending until Stripe says paid"

    again = await (await studio.client.post("/api/models/purchase/llama3.2:3b")).json()
    assert again["checkout_url"] == body["checkout_url"], "an open checkout is reused"

    studio.stripe.pay(session_id)
    statuses = await studio.stripe.deliver(studio.url("/api/webhooks/stripe"), "checkout.session.completed", session_id)

    assert statuses == [200]
    await studio.wait_for_event("install.completed", "llama3.2:3b")
    assert (await studio.model("llama3.2:3b"))["owned"] is True
    purchase = await (await studio.client.get(f"/api/purchases/{body['purchase_id']}")).json()
    assert purchase["status"] == "paid"


async def test_success_page_completes_the_purchase_before_the_webhook(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    studio.stripe.pay(body["checkout_url"].rsplit("/", 1)[1])

    purchase = await (await studio.client.get(f"/api/purchases/{body['purchase_id']}")).json()

    assert purchase["status"] == "paid"
    await studio.wait_for_event("install.completed", "phi3:mini")


async def test_same_webhook_three_times_at_once_buys_and_pulls_once(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/llama3.2:1b")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.pay(session_id)
    event = studio.stripe.event("checkout.session.completed", dict(studio.stripe.sessions[session_id]))

    statuses = await studio.stripe.send(studio.url("/api/webhooks/stripe"), event, times=3)

    assert statuses == [200, 200, 200]
    await studio.wait_for_event("install.completed", "llama3.2:1b")
    assert len(studio.of_type("payment.succeeded")) == 1
    assert len(studio.of_type("purchase.completed", "llama3.2:1b")) == 1
    assert studio.ollama.pull_count("llama3.2:1b") == 1
    rows = await studio.client.get("/api/purchases")
    assert [p["status"] for p in (await rows.json())["purchases"]] == ["paid"]


async def test_already_owned_is_a_conflict(studio) -> None:
    assert (await studio.client.post("/api/models/purchase/tinyllama:latest")).status == 200
    again = await studio.client.post("/api/models/purchase/tinyllama:latest")
    assert again.status == 409 and (await again.json())["error"]["code"] == "already_owned"


async def test_unknown_model_is_404_and_changes_nothing(studio) -> None:
    before = await studio.db_counts()
    resp = await studio.client.post("/api/models/purchase/evil.example.com:5000/x")
    bad_name = await studio.client.post("/api/models/purchase/nope:1b")

    assert resp.status == 404 and bad_name.status == 404
    assert (await bad_name.json())["error"]["code"] == "unknown_model"
    assert await studio.db_counts() == before


async def test_stripe_down_is_503_and_records_nothing(studio) -> None:
    before = await studio.db_counts()
    studio.stripe.failing = True

    resp = await studio.client.post("/api/models/purchase/mistral:7b")

    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "payments_unavailable" and "nothing was charged" in error["message"]
    assert resp.headers["Retry-After"]
    assert await studio.db_counts() == before


async def test_paid_models_need_stripe_or_test_mode(embedded_studio, settings, ollama, stripe_api, bus) -> None:
    from studio.runtime.settings import Secret

    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, stripe_secret_key=Secret(""))
    resp = await studio.client.post("/api/models/purchase/mistral:7b")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "payments_not_configured"
    listing = await (await studio.client.get("/api/models")).json()
    assert listing["payments"] == "disabled"


async def test_expired_checkout_fails_the_purchase(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/gemma2:9b")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.expire(session_id)

    assert await studio.stripe.deliver(studio.url("/api/webhooks/stripe"), "checkout.session.expired", session_id) == [
        200
    ]

    failed = await studio.wait_for_event("purchase.failed")
    assert failed[0].data["reason"] == "checkout expired"
    purchase = await (await studio.client.get(f"/api/purchases/{body['purchase_id']}")).json()
    assert purchase["status"] == "failed"


async def test_full_refund_revokes_ownership_partial_does_not(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/codellama:7b")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.pay(session_id)
    hook = studio.url("/api/webhooks/stripe")
    await studio.stripe.deliver(hook, "checkout.session.completed", session_id)
    await studio.wait_for_event("purchase.completed", "codellama:7b")

    await studio.stripe.send(hook, studio.stripe.refund_event(session_id, amount_refunded=100))
    await studio.stripe.send(hook, studio.stripe.refund_event(session_id))

    revoked = await studio.wait_for_event("purchase.revoked", "codellama:7b")
    assert len(revoked) == 1 and revoked[0].data["reason"] == "refunded"
    assert (await studio.model("codellama:7b"))["owned"] is False


async def test_operator_sees_everyones_purchase_state(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/tinyllama:latest")).json()
    async with studio.visitor() as stranger:
        hidden = await stranger.get(studio.url(f"/api/purchases/{body['purchase_id']}"))
        assert hidden.status == 404
    seen = await studio.client.get(f"/api/purchases/{body['purchase_id']}", headers=OPERATOR)
    assert seen.status == 200
