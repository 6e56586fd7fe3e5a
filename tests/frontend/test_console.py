"""The operator console (/admin): a visitor is refused; the operator refunds a purchase through Stripe
(with a confirmation step) and retries a failed install."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from events.catalog import PaymentSucceeded
from events.envelope import Event
from functions import load
from studio import catalog
from studio.runtime.database import utcnow
from tests.frontend.conftest import FUNCTIONS, OPERATOR_TOKEN
from tests.frontend.support import card
from tests.support import wait_sync

STUDIO = {"skip_payment": False, "functions": (*FUNCTIONS, "monitor")}


@pytest.fixture(autouse=True)
def health_may_fail(watch):
    watch.allow(r"status of 503")  # /health answers 503 while a component is failing: the overview says so


def visitor(studio) -> httpx.Client:
    client = httpx.Client(base_url=studio.url, timeout=10)
    assert client.get("/").status_code == 200  # the visitor cookie
    return client


def sign_in(page, studio) -> None:
    page.goto(studio.url + "/admin")
    page.get_by_label("Operator token (STUDIO_ADMIN_TOKEN)").fill(OPERATOR_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#console")).to_be_visible()


def test_a_visitor_is_refused_the_console(studio, page, watch) -> None:
    watch.allow(r"status of 40[13]")  # the browser notes the refused API calls

    page.goto(studio.url + "/admin")

    expect(page.locator("#denied")).to_have_text("Operators only: sign in with the operator token.")
    expect(page.locator("#console")).to_be_hidden()
    page.get_by_label("Operator token (STUDIO_ADMIN_TOKEN)").fill("a guess")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#denied")).to_have_text("That token is not the operator's.")
    expect(page.locator("#console")).to_be_hidden()
    assert httpx.get(studio.url + "/api/purchases?all=1").status_code in (401, 403)


def test_the_operator_refunds_a_purchase_through_stripe(studio, page) -> None:
    buyer = visitor(studio)
    body = buyer.post("/api/models/purchase/llama3.2:1b").json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.call(lambda: studio.stripe.pay(session_id))
    hook = studio.url + "/api/webhooks/stripe"
    assert studio.call(lambda: studio.stripe.deliver(hook, "checkout.session.completed", session_id)) == [200]
    wait_sync(lambda: buyer.get(f"/api/purchases/{body['purchase_id']}").json()["status"] == "paid")

    sign_in(page, studio)
    page.get_by_label("Purchase, e-mail, visitor, model or payment").fill(body["purchase_id"])
    page.get_by_role("button", name="Search").click()
    row = page.locator(f'tr[data-purchase="{body["purchase_id"]}"]')
    expect(row).to_contain_text("paid")
    row.get_by_role("button", name=f"Timeline of {body['purchase_id']}").click()
    timeline = page.locator("#timeline-events li")
    expect(timeline.first).to_have_attribute("data-type", "purchase.created")
    expect(page.locator('#timeline-events li[data-type="purchase.completed"]')).to_have_count(1)
    expect(page.locator('#timeline-events li[data-type="payment.succeeded"]')).to_have_count(1)
    row.get_by_role("button", name=f"Refund {body['purchase_id']}").click()
    expect(row).to_contain_text("Give $1.99 back for llama3.2:1b?")
    assert studio.call(lambda: list(studio.stripe.refund_requests)) == [], "nothing before the confirmation"
    row.get_by_role("button", name="Confirm refund").click()

    expect(page.locator("#notice")).to_have_text(
        "Refund of $1.99 for llama3.2:1b sent to Stripe; access ends when Stripe confirms it."
    )
    assert studio.call(lambda: studio.stripe.charge_of(session_id)["refunded"]) is True
    assert studio.call(lambda: studio.stripe.send(hook, studio.stripe.refund_event(session_id))) == [200]
    wait_sync(lambda: buyer.get(f"/api/purchases/{body['purchase_id']}").json()["status"] == "refunded")
    page.get_by_role("button", name="Search").click()
    expect(row).to_contain_text("refunded")
    page.get_by_role("button", name="Refresh overview").click()
    today = page.locator('#sales tr[data-period="today"] td')
    expect(today.nth(1)).to_have_text("0")  # no paid sale left today
    expect(today.nth(3)).to_have_text("1")  # one refunded
    expect(page.locator("#health-components")).to_contain_text("nats: ok")
    expect(row.get_by_role("button", name=f"Refund {body['purchase_id']}")).to_have_count(0)


def test_the_operator_retries_a_failed_install(studio, page) -> None:
    model_id = "qwen2.5:0.5b"
    kept = studio.call(lambda: studio.ollama.registry_model(model_id))
    studio.call(lambda: studio.ollama.remove_model(model_id))  # the pull fails for good
    buyer = visitor(studio)
    assert buyer.post(f"/api/models/purchase/{model_id}").status_code == 200

    sign_in(page, studio)
    row = page.locator(f'#installs tr[data-model="{model_id}"]')
    refresh = page.get_by_role("button", name="Refresh installs")
    wait_sync(lambda: refresh.click() or "failed" in row.inner_text(), message="the install failed")
    studio.call(lambda: studio.ollama.add_model(model_id, kept))
    row.get_by_role("button", name=f"Retry {model_id}").click()

    expect(page.locator("#notice")).to_have_text(f"{model_id}: install requested.")
    expect(page.locator('#tail li[data-type="install.requested"]').first).to_contain_text(model_id)  # live
    wait_sync(lambda: studio.call(lambda: studio.ollama.is_installed(model_id)), timeout=30)
    wait_sync(lambda: refresh.click() or "installed" in row.inner_text(), message="shown installed")
    expect(row.get_by_role("button", name=f"Remove {model_id}")).to_be_visible()
    expect(row.locator("td").nth(2)).to_have_text(f"{studio.ollama.url}: installed")  # each node's state


def test_the_operator_redrives_a_dead_letter_after_the_fix(studio, page) -> None:
    purchase_id = "pur_" + "ab" * 10
    lost = PaymentSucceeded(
        stripe_event_id="evt_lost",
        session_id="cs_test_lost",
        purchase_id=purchase_id,
        user_id=None,
        model=None,
        payment_intent="pi_lost",
        amount_cents=299,
        currency="usd",
    )
    event = Event(type=lost.TYPE, source="/tests", data=lost.to_data(), subject=lost.subject)
    studio.call(lambda: studio.host.bus.publish(event))  # a payment for a purchase the studio has no record of
    sign_in(page, studio)
    row = page.locator(f'#dead-letters tr[data-event="{event.id}"]')
    refresh = page.get_by_role("button", name="Refresh dead letters")
    wait_sync(lambda: refresh.click() or row.count() == 1, message="the dead letter listed")
    expect(row).to_contain_text("purchase__settle_payment")
    expect(row).to_contain_text("names no purchase")

    purchase = load("purchase")  # the fix: the operator puts the missing purchase back (from a backup)
    studio.call(
        lambda: purchase.db.execute(
            "INSERT INTO purchases (id, user_id, model, kind, status, amount_cents, currency, checkout_session_id, "
            "created_at, updated_at) VALUES (?, 'v_restored', 'phi3:mini', 'stripe', 'pending', 299, 'usd', "
            "'cs_test_lost', ?, ?)",
            (purchase_id, utcnow(), utcnow()),
        )
    )
    row.get_by_role("button", name=f"Redrive {event.id}").click()

    expect(page.locator("#notice")).to_have_text(f"payment.succeeded {event.id} is back in the stream.")
    expect(row).to_contain_text("Redriven")
    wait_sync(
        lambda: (
            studio.call(lambda: purchase.db.fetch_one("SELECT status FROM purchases WHERE id = ?", (purchase_id,)))[
                "status"
            ]
            == "paid"
        ),
        message="the redriven payment settled",
    )


@pytest.fixture
def seed_catalog_after():
    yield
    catalog.cached.cache_clear()  # later modules start from the file again (this studio's changes die with it)


def test_a_price_change_is_seen_on_the_marketplace_in_another_tab(studio, page, context, seed_catalog_after) -> None:
    shopper = context.new_page()
    shopper.goto(studio.url + "/marketplace")
    expect(card(shopper, "llama3.2:1b")).to_contain_text("Buy for $1.99")

    sign_in(page, studio)
    row = page.locator('#catalog tr[data-model="llama3.2:1b"]')
    row.get_by_label("Price of llama3.2:1b (USD)").fill("2.49")
    row.get_by_role("button", name="Save llama3.2:1b").click()
    expect(page.locator("#notice")).to_have_text("llama3.2:1b saved: $2.49.")

    expect(card(shopper, "llama3.2:1b")).to_contain_text("Buy for $2.49")  # live: the open tab, no reload


def test_a_dispute_takes_the_model_away_live_and_a_won_dispute_gives_it_back(studio, page) -> None:
    page.goto(studio.url + "/marketplace")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    shopper = httpx.Client(base_url=studio.url, cookies=cookies, timeout=10)  # the page's own visitor
    body = shopper.post("/api/models/purchase/mistral:7b").json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    studio.call(lambda: studio.stripe.pay(session_id))
    hook = studio.url + "/api/webhooks/stripe"
    studio.call(lambda: studio.stripe.deliver(hook, "checkout.session.completed", session_id))
    model = card(page, "mistral:7b")
    expect(model).to_have_attribute("data-owned", "true")

    dispute = studio.call(lambda: dict(studio.stripe.dispute(session_id, "needs_response")))
    studio.call(lambda: studio.stripe.send(hook, studio.stripe.event("charge.dispute.created", dispute)))
    expect(model).to_have_attribute("data-owned", "false")  # live, no reload

    dispute = studio.call(lambda: dict(studio.stripe.dispute(session_id, "won")))
    studio.call(lambda: studio.stripe.send(hook, studio.stripe.event("charge.dispute.closed", dispute)))
    expect(model).to_have_attribute("data-owned", "true")
