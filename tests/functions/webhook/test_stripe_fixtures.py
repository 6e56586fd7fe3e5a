"""Stripe events shaped after Stripe's published fixtures, signed as Stripe signs them, in both
arrival orders: events that are not the studio's, refunds before confirmations, promotion codes,
disputes, failed refunds and malformed fields."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from functions import load
from tests.functions.pipeline import OPERATOR, PIPELINE, Studio, pipeline_settings
from tests.functions.webhook import fixtures
from tests.support import eventually

HOOK = "/api/webhooks/stripe"


@pytest.fixture
async def watched(embedded_studio, settings, ollama, stripe_api, bus) -> Studio:
    """The pipeline plus the monitor (its /metrics counts ignored Stripe events)."""
    s = pipeline_settings(settings, ollama, stripe_api)
    client = await embedded_studio([load(n) for n in (*PIPELINE, "monitor")], settings_override=s)
    studio = Studio(client=client, bus=bus, ollama=ollama, stripe=stripe_api)
    for pattern in ("purchase.*", "install.*", "payment.*", "event.*", "stripe_event.*"):
        await bus.listen(pattern, studio.events)
    await bus.flush()
    assert (await client.get("/")).status in (200, 404)
    return studio


async def send(studio: Studio, event: dict) -> tuple[int, dict]:
    body, headers = studio.stripe.signed(event)
    resp = await studio.client.post(HOOK, data=body, headers=headers)
    return resp.status, await resp.json()


async def checkout(studio: Studio, model: str) -> tuple[str, dict]:
    """A visitor opens Checkout and pays at the Stripe stand-in: (purchase id, the double's session)."""
    body = await (await studio.client.post(f"/api/models/purchase/{model}")).json()
    session = studio.stripe.pay(body["checkout_url"].rsplit("/", 1)[1])
    await studio.wait_for_event("purchase.created", model)  # in the stream: counts taken now are stable
    return body["purchase_id"], dict(session)


async def purchase_state(studio: Studio, purchase_id: str) -> dict:
    return await (await studio.client.get(f"/api/purchases/{purchase_id}", headers=OPERATOR)).json()


async def settled(studio: Studio) -> None:
    """Wait until the purchase function has settled every payment event (its consumer has none left)."""

    await eventually(lambda: studio.idle("purchase__settle_payment"), message="purchase settled every payment event")


def refunded_charge(session: dict, **changes) -> dict:
    amount = session["amount_total"]
    ours = {
        "id": f"ch_{session['id'][8:]}",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount,
        "refunded": True,
        "payment_intent": session["payment_intent"],
    }
    return fixtures.charge(**{**ours, **changes})


def dispute_of(session: dict, **changes) -> dict:
    ours = {
        "id": f"dp_{session['id'][8:]}",
        "charge": f"ch_{session['id'][8:]}",
        "amount": session["amount_total"],
        "payment_intent": session["payment_intent"],
    }
    return fixtures.dispute(**{**ours, **changes})


# -- (a) events that are not the studio's ----------------------------------------------------------

FOREIGN = {
    "paid session without studio metadata": lambda: fixtures.event(
        "checkout.session.completed",
        fixtures.checkout_session(status="complete", payment_status="paid", amount_total=2000, currency="usd"),
    ),
    "paid session with a foreign client_reference_id": lambda: fixtures.event(
        "checkout.session.completed",
        fixtures.checkout_session(
            status="complete", payment_status="paid", client_reference_id="order_8812", metadata={"sku": "tee"}
        ),
    ),
    "studio-like metadata, another client_reference_id": lambda: fixtures.event(
        "checkout.session.completed",
        fixtures.checkout_session(
            status="complete",
            payment_status="paid",
            client_reference_id="cart_77",
            metadata={"purchase_id": "pur_" + "0" * 20},
        ),
    ),
    "full refund with payment_intent null": lambda: fixtures.event(
        "charge.refunded", fixtures.charge(amount_refunded=100, refunded=True)
    ),
    "dispute with payment_intent null": lambda: fixtures.event("charge.dispute.created", fixtures.dispute()),
}


@pytest.mark.parametrize("case", list(FOREIGN))
async def test_events_that_are_not_the_studios_are_acknowledged_counted_and_go_no_further(watched, case) -> None:
    studio = watched
    before = await studio.db_counts()

    status, answer = await send(studio, FOREIGN[case]())

    assert (status, answer["outcome"]) == (200, "ignored")
    ignored = await studio.wait_for_event("stripe_event.ignored")
    assert ignored[0].data["reason"] in ("no studio metadata", "foreign client_reference_id", "no payment intent")
    assert [e.type for e in studio.events.items] == ["stripe_event.ignored"], "no payment.*, no dead letter"
    after = await studio.db_counts()
    assert after["purchases"] == before["purchases"] and after["stream"] == before["stream"]

    async def counted():
        text = await (await studio.client.get("/metrics", headers=OPERATOR)).text()
        return 'studio_events_total{type="stripe_event.ignored"} 1.0' in text

    await eventually(counted, message="the monitor's counter of ignored Stripe events")


async def test_a_foreign_event_is_logged_at_info(watched, caplog) -> None:
    with caplog.at_level(logging.INFO):
        await send(watched, FOREIGN["full refund with payment_intent null"]())
    lines = [r for r in caplog.records if "not the studio's" in r.getMessage()]
    assert lines and lines[0].levelno == logging.INFO


# -- (b) a refund before the confirmation ------------------------------------------------------------


@pytest.mark.parametrize("order", ["refund_first", "confirmation_first"])
async def test_a_full_refund_wins_whatever_the_arrival_order(studio, order) -> None:
    purchase_id, session = await checkout(studio, "codellama:7b")
    completed = fixtures.event("checkout.session.completed", fixtures.studio_session(session))
    refunded = fixtures.event("charge.refunded", refunded_charge(session))
    first, second = (refunded, completed) if order == "refund_first" else (completed, refunded)

    assert (await send(studio, first))[0] == 200
    if order == "confirmation_first":
        await studio.wait_for_event("purchase.completed", "codellama:7b")
    assert (await send(studio, second))[0] == 200

    revoked = await studio.wait_for_event("purchase.revoked", "codellama:7b")
    assert revoked[0].data["purchase_id"] == purchase_id
    assert (await purchase_state(studio, purchase_id))["status"] == "refunded"
    assert (await studio.model("codellama:7b"))["owned"] is False
    if order == "refund_first":
        assert studio.of_type("purchase.completed", "codellama:7b") == [], "never owned, never installed"
    assert studio.of_type("event.dead_lettered") == []


async def test_a_refund_before_the_confirmation_of_a_purchase_with_no_record_still_wins(studio) -> None:
    purchase_id = "pur_" + "5e" * 10  # the studio crashed between opening Checkout and saving it
    session = fixtures.checkout_session(
        id="cs_test_crashed",
        status="complete",
        payment_status="paid",
        amount_total=299,
        currency="usd",
        payment_intent="pi_crashed",
        client_reference_id=purchase_id,
        metadata={"purchase_id": purchase_id, "user_id": "v_crashed", "model": "phi3:mini"},
    )
    charge = fixtures.charge(
        id="ch_crashed", amount=299, amount_refunded=299, refunded=True, payment_intent="pi_crashed"
    )

    await send(studio, fixtures.event("charge.refunded", charge))
    await send(studio, fixtures.event("checkout.session.completed", session))

    revoked = await studio.wait_for_event("purchase.revoked", "phi3:mini")
    assert revoked[0].data["purchase_id"] == purchase_id
    assert (await purchase_state(studio, purchase_id))["status"] == "refunded"
    assert studio.of_type("purchase.completed") == []


# -- (c) no payment required -------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["webhook_first", "success_page_first"])
async def test_no_payment_required_is_fulfilled(studio, order) -> None:
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    session = studio.stripe.sessions[body["checkout_url"].rsplit("/", 1)[1]]
    session.update(status="complete", payment_status="no_payment_required", amount_total=0, url=None)
    event = fixtures.event(
        "checkout.session.completed", fixtures.studio_session(session, payment_status="no_payment_required")
    )

    if order == "success_page_first":
        assert (await purchase_state(studio, body["purchase_id"]))["status"] == "paid"
    status, answer = await send(studio, event)

    assert status == 200 and answer["outcome"] == "payment.succeeded"
    await studio.wait_for_event("purchase.completed", "phi3:mini")
    assert len(studio.of_type("purchase.completed", "phi3:mini")) == 1
    assert (await studio.model("phi3:mini"))["owned"] is True


# -- (d) disputes and failed refunds -------------------------------------------------------------------


async def owned(studio: Studio, model: str) -> bool:
    return (await studio.model(model))["owned"]


@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_a_dispute_suspends_then_its_outcome_decides(studio, outcome) -> None:
    purchase_id, session = await checkout(studio, "mistral:7b")
    await send(studio, fixtures.event("checkout.session.completed", fixtures.studio_session(session)))
    await studio.wait_for_event("purchase.completed", "mistral:7b")

    await send(studio, fixtures.event("charge.dispute.created", dispute_of(session, status="needs_response")))
    suspended = await studio.wait_for_event("purchase.suspended", "mistral:7b")
    assert suspended[0].data["reason"] == "disputed"
    assert await owned(studio, "mistral:7b") is False
    assert (await purchase_state(studio, purchase_id))["suspended"] is True
    again = await studio.client.post("/api/models/purchase/mistral:7b")
    assert again.status == 409, "a disputed purchase is not bought twice"

    await send(studio, fixtures.event("charge.dispute.closed", dispute_of(session, status=outcome)))
    if outcome == "won":
        restored = await studio.wait_for_event("purchase.restored", "mistral:7b")
        assert restored[0].data["reason"] == "dispute won"
        assert await owned(studio, "mistral:7b") is True
        assert (await purchase_state(studio, purchase_id))["status"] == "paid"
    else:
        revoked = await studio.wait_for_event("purchase.revoked", "mistral:7b")
        assert revoked[0].data["reason"] == "dispute lost"
        assert await owned(studio, "mistral:7b") is False
        assert (await purchase_state(studio, purchase_id))["status"] == "refunded"


@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_a_dispute_closed_before_its_opening_arrives_ends_the_same(studio, outcome) -> None:
    _, session = await checkout(studio, "mistral:7b")
    now = fixtures.event("x", {})["created"]
    closed = fixtures.event("charge.dispute.closed", dispute_of(session, status=outcome), created=now)
    opened = fixtures.event("charge.dispute.created", dispute_of(session, status="needs_response"), created=now - 60)

    await send(studio, closed)  # before even the confirmation
    await send(studio, fixtures.event("checkout.session.completed", fixtures.studio_session(session)))
    await send(studio, opened)  # late

    if outcome == "won":
        await studio.wait_for_event("purchase.completed", "mistral:7b")
        await studio.wait_for_event("payment.disputed")
        await settled(studio)
        assert await owned(studio, "mistral:7b") is True
        assert studio.of_type("purchase.suspended") == []
    else:
        await studio.wait_for_event("purchase.revoked", "mistral:7b")
        assert studio.of_type("purchase.completed", "mistral:7b") == []
        assert await owned(studio, "mistral:7b") is False
    assert studio.of_type("event.dead_lettered") == []


@pytest.mark.parametrize("kind", ["refund.failed", "charge.refund.updated"])
@pytest.mark.parametrize("order", ["refund_then_failure", "failure_then_refund"])
async def test_a_failed_refund_restores_ownership(studio, kind, order) -> None:
    purchase_id, session = await checkout(studio, "qwen2.5:7b")
    await send(studio, fixtures.event("checkout.session.completed", fixtures.studio_session(session)))
    await studio.wait_for_event("purchase.completed", "qwen2.5:7b")
    now = fixtures.event("x", {})["created"]
    refunded = fixtures.event("charge.refunded", refunded_charge(session), created=now - 30)
    failed = fixtures.event(
        kind,
        fixtures.refund(
            amount=session["amount_total"],
            charge=f"ch_{session['id'][8:]}",
            payment_intent=session["payment_intent"],
            status="failed",
            failure_reason="expired_or_canceled_card",
        ),
        created=now,
    )

    if order == "refund_then_failure":
        await send(studio, refunded)
        await studio.wait_for_event("purchase.revoked", "qwen2.5:7b")
        await send(studio, failed)
        restored = await studio.wait_for_event("purchase.restored", "qwen2.5:7b")
        assert restored[0].data["reason"] == "refund failed"
    else:
        await send(studio, failed)
        await send(studio, refunded)  # Stripe's older snapshot, delivered late
        await studio.wait_for_event("payment.refunded")
    await settled(studio)
    assert await owned(studio, "qwen2.5:7b") is True
    assert (await purchase_state(studio, purchase_id))["status"] == "paid"


async def test_a_refund_update_that_did_not_fail_changes_nothing(studio) -> None:
    _, session = await checkout(studio, "qwen2.5:7b")
    await send(studio, fixtures.event("checkout.session.completed", fixtures.studio_session(session)))
    await studio.wait_for_event("purchase.completed", "qwen2.5:7b")

    status, answer = await send(
        studio,
        fixtures.event("charge.refund.updated", fixtures.refund(payment_intent=session["payment_intent"])),
    )

    assert (status, answer["outcome"]) == (200, "ignored")
    assert await owned(studio, "qwen2.5:7b") is True


# -- malformed fields ------------------------------------------------------------------------------------

MALFORMED: dict[str, tuple[str, dict[str, Any], str]] = {
    "metadata as a list": ("checkout.session.completed", {"metadata": ["purchase_id", "pur_x"]}, "metadata"),
    "amount out of range": ("checkout.session.completed", {"amount_total": 10**20}, "amount_total"),
    "negative amount": ("checkout.session.completed", {"amount_total": -499}, "amount_total"),
    "amount as text": ("charge.refunded", {"amount": "499"}, "amount"),
    "refunded as text": ("charge.refunded", {"refunded": "yes"}, "refunded"),
    "payment intent as a number": ("charge.dispute.created", {"payment_intent": 42}, "payment_intent"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_signed_event_with_malformed_fields_is_400_and_changes_nothing(studio, caplog, case) -> None:
    kind, changes, field = MALFORMED[case]
    _, session = await checkout(studio, "llama3.2:3b")
    if kind == "checkout.session.completed":
        obj = fixtures.studio_session(session, **changes)
    elif kind == "charge.refunded":
        obj = refunded_charge(session, **changes)
    else:
        obj = dispute_of(session, **changes)
    before = await studio.db_counts()

    with caplog.at_level(logging.INFO):
        status, answer = await send(studio, fixtures.event(kind, obj))

    assert status == 400 and answer["error"]["code"] == "invalid_event"
    assert field in answer["error"]["message"]
    assert await studio.db_counts() == before
    logged = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert logged and logged[0].levelno == logging.WARNING


async def test_signed_body_whose_data_is_not_an_object_is_400(studio) -> None:
    event = fixtures.event("checkout.session.completed", {})
    event["data"] = ["not", "an", "object"]
    status, answer = await send(studio, event)
    assert status == 400 and answer["error"]["code"] == "invalid_signature"
