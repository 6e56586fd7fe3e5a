"""The operator refunds a purchase through Stripe (with confirmation); the webhook then revokes it."""

from __future__ import annotations

from tests.functions.pipeline import OPERATOR, start_studio
from tests.support import Recorder


async def test_the_operator_refunds_through_stripe_and_the_webhook_revokes(studio) -> None:
    operator_events = Recorder()
    await studio.bus.listen("operator.*", operator_events)
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.pay(session_id)
    hook = studio.url("/api/webhooks/stripe")
    await studio.stripe.deliver(hook, "checkout.session.completed", session_id)
    await studio.wait_for_event("purchase.completed", "phi3:mini")
    url = f"/api/purchases/{body['purchase_id']}/refund"
    found = await (await studio.client.get("/api/purchases?all=1&q=BUYER@example", headers=OPERATOR)).json()
    assert [(p["id"], p["email"]) for p in found["purchases"]] == [(body["purchase_id"], "buyer@example.com")]

    unconfirmed = await studio.client.post(url, json={}, headers=OPERATOR)
    by_visitor = await studio.client.post(url, json={"confirm": True})
    assert unconfirmed.status == 400 and (await unconfirmed.json())["error"]["code"] == "confirmation_required"
    assert by_visitor.status in (401, 403)  # the gateway closes operator routes to visitors
    assert studio.stripe.refund_requests == []

    refunded = await studio.client.post(url, json={"confirm": True}, headers=OPERATOR)

    assert refunded.status == 200 and (await refunded.json())["status"] == "succeeded"
    assert studio.stripe.refund_requests == [{"payment_intent": f"pi_{session_id[8:]}"}]
    assert studio.stripe.charge_of(session_id)["refunded"] is True
    await studio.stripe.send(hook, studio.stripe.refund_event(session_id))  # Stripe's webhook follows
    revoked = await studio.wait_for_event("purchase.revoked", "phi3:mini")
    assert revoked[0].data["purchase_id"] == body["purchase_id"]
    assert (await studio.model("phi3:mini"))["owned"] is False
    assert [e.type for e in operator_events.items] == ["operator.refund_requested"]
    assert operator_events.items[0].data["operator"] == "admin token"
    again = await studio.client.post(url, json={"confirm": True}, headers=OPERATOR)
    assert again.status == 409 and (await again.json())["error"]["code"] == "not_refundable"


async def test_the_operator_searches_every_visitors_purchases(studio) -> None:
    await studio.client.post("/api/models/purchase/tinyllama:latest")
    await studio.client.post("/api/models/purchase/phi3:mini")

    found = await (await studio.client.get("/api/purchases?all=1&q=phi3", headers=OPERATOR)).json()
    free = await (await studio.client.get("/api/purchases?all=1&status=paid", headers=OPERATOR)).json()

    assert [p["model"] for p in found["purchases"]] == ["phi3:mini"]
    assert found["purchases"][0]["user_id"].startswith("v_")
    assert [p["model"] for p in free["purchases"]] == ["tinyllama:latest"]


async def test_the_overview_counts_todays_sales(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.pay(session_id)
    await studio.stripe.deliver(studio.url("/api/webhooks/stripe"), "checkout.session.completed", session_id)
    await studio.wait_for_event("purchase.completed", "phi3:mini")
    await studio.client.post("/api/models/purchase/tinyllama:latest")  # free: not a sale

    resp = await studio.client.get("/api/overview", headers=OPERATOR)
    visitor = await studio.client.get("/api/overview")

    sales = (await resp.json())["sales"]
    for period in ("today", "7d", "30d"):
        assert sales[period] == {
            "purchases": 1,
            "amount_cents": {"usd": 299},
            "refunded": 0,
            "test": {"purchases": 0, "amount_cents": {}, "refunded": 0},
        }
    assert (await resp.json())["ollama_disk"] is None  # STUDIO_OLLAMA_MODELS_DIR not set
    assert visitor.status in (401, 403)


async def test_the_console_can_ask_whether_this_session_is_the_operators(studio) -> None:
    visitor = await (await studio.client.get("/api/operator")).json()
    operator = await (await studio.client.get("/api/operator", headers=OPERATOR)).json()
    assert (visitor, operator) == ({"operator": False}, {"operator": True})


async def test_an_install_the_operator_asks_for_says_who_asked(studio) -> None:
    operator_events = Recorder()
    await studio.bus.listen("operator.*", operator_events)

    resp = await studio.client.post("/api/models/install", json={"model": "phi3:mini"}, headers=OPERATOR)

    assert resp.status == 202
    await studio.wait_for_event("install.completed", "phi3:mini")
    assert [(e.type, e.data["model"], e.data["operator"]) for e in operator_events.items] == [
        ("operator.install_requested", "phi3:mini", "admin token")
    ]


async def test_a_test_mode_refund_is_rehearsed_through_the_same_path_without_stripe(
    embedded_studio, settings, ollama, stripe_api, bus
) -> None:
    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)
    operator_events = Recorder()
    await studio.bus.listen("operator.*", operator_events)
    bought = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    await studio.client.post("/api/models/purchase/tinyllama:latest")  # free: never a sale, never refundable
    await studio.wait_for_event("purchase.completed", "phi3:mini")
    before = (await (await studio.client.get("/api/overview", headers=OPERATOR)).json())["sales"]["today"]
    assert before == {
        "purchases": 0,
        "amount_cents": {},
        "refunded": 0,
        "test": {"purchases": 1, "amount_cents": {"usd": 299}, "refunded": 0},
    }

    url = f"/api/purchases/{bought['purchase_id']}/refund"
    refunded = await studio.client.post(url, json={"confirm": True}, headers=OPERATOR)

    body = await refunded.json()
    assert refunded.status == 200 and body["test"] is True and body["refund_id"].startswith("re_test_")
    assert studio.stripe.refund_requests == []  # no Stripe call
    revoked = await studio.wait_for_event("purchase.revoked", "phi3:mini")
    assert revoked[0].data["purchase_id"] == bought["purchase_id"]
    refund_facts = studio.of_type("payment.refunded")
    assert [e.data["payment_intent"] for e in refund_facts] == ["pi_test_" + bought["purchase_id"][4:]]
    assert (await studio.model("phi3:mini"))["owned"] is False
    assert [e.type for e in operator_events.items] == ["operator.refund_requested"]
    overview = await (await studio.client.get("/api/overview", headers=OPERATOR)).json()
    assert overview["payments"] == "test"
    assert overview["sales"]["today"]["test"] == {"purchases": 0, "amount_cents": {}, "refunded": 1}
    [today] = overview["days"]["rows"]
    assert today["day"] == overview["days"]["to"]
    assert {k: today[k] for k in ("kind", "sales", "sales_cents", "refunds", "refunded_cents")} == {
        "kind": "test",
        "sales": 1,
        "sales_cents": 299,
        "refunds": 1,
        "refunded_cents": 299,
    }
    again = await studio.client.post(url, json={"confirm": True}, headers=OPERATOR)
    assert again.status == 409 and (await again.json())["error"]["code"] == "not_refundable"


async def test_the_buyers_email_stays_with_the_purchase_never_in_the_event_stream(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.stripe.pay(session_id)
    await studio.stripe.deliver(studio.url("/api/webhooks/stripe"), "checkout.session.completed", session_id)
    await studio.wait_for_event("purchase.completed", "phi3:mini")

    (paid,) = studio.of_type("payment.succeeded")
    assert "email" not in paid.data and "buyer@example.com" not in paid.to_json().decode()
    assert not any(b"buyer@example.com" in e.to_json() for e in studio.events.items), "in no event at all"
    found = await (await studio.client.get("/api/purchases?all=1&q=buyer@", headers=OPERATOR)).json()
    assert [(p["id"], p["email"]) for p in found["purchases"]] == [(body["purchase_id"], "buyer@example.com")]
