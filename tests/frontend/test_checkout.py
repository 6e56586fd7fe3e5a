"""Buying with Stripe Checkout: off to Stripe and back to the marketplace, which shows the purchase completing.

The studio talks to the Stripe stand-in; the browser's trip to Stripe's hosted page is answered by a tiny
fake checkout page (Playwright intercepts checkout.stripe.test) whose links are the session's own success
and cancel URLs, as Stripe's page would use them.
"""

from __future__ import annotations

import html
import re

import pytest
from playwright.sync_api import expect

from tests.frontend.support import card

STUDIO = {"skip_payment": False}


@pytest.fixture
def checkout(studio, page):
    """Serve Stripe's hosted checkout page as a stand-in; `checkout.sessions` lists the sessions opened."""

    class Checkout:
        sessions: list[str] = []

    def fake_page(route):
        sid = route.request.url.rstrip("/").rsplit("/", 1)[-1]
        session = studio.call(lambda: dict(studio.stripe.sessions[sid]))
        Checkout.sessions.append(sid)
        pay = session["success_url"].replace("{CHECKOUT_SESSION_ID}", sid)
        body = (
            f"<!doctype html><title>Stripe Checkout</title><h1>Pay {session['amount_total'] / 100:.2f}</h1>"
            f'<a href="{html.escape(pay)}">Pay</a> <a href="{html.escape(session["cancel_url"])}">Back</a>'
        )
        route.fulfill(status=200, content_type="text/html", body=body)

    page.route("https://checkout.stripe.test/**", fake_page)
    return Checkout


def test_paying_on_stripe_returns_to_the_marketplace_which_shows_the_purchase_completing(studio, page, checkout):
    page.goto(studio.url + "/marketplace")
    expect(page.get_by_text("Purchases are simulated")).to_have_count(0)  # real payments here
    model = card(page, "llama3.2:3b")
    model.get_by_role("button", name="Buy for $4.99 Llama 3.2 3B").click()

    expect(page).to_have_url(re.compile(r"^https://checkout\.stripe\.test/c/pay/cs_test_"))
    expect(page.get_by_role("heading")).to_have_text("Pay 4.99")
    page.get_by_role("link", name="Pay").click()  # back before Stripe has settled the payment

    expect(page).to_have_url(re.compile(r"/marketplace\?purchase=pur_\w+&session_id=cs_test_"))
    banner = page.locator("#purchase-banner")
    expect(banner).to_contain_text("Confirming your payment")
    studio.call(lambda: studio.stripe.pay(checkout.sessions[-1]))  # Stripe takes the money

    expect(banner).to_contain_text("Payment received")
    expect(banner).to_contain_text("Llama 3.2 3B is yours")
    expect(page).to_have_url(studio.url + "/marketplace")  # a reload won't replay the banner
    expect(model.locator(".badge.owned")).to_be_visible()
    expect(model.locator(".badge.installed")).to_be_visible(timeout=30_000)
    expect(model.get_by_role("link", name="Chat Llama 3.2 3B")).to_be_visible()


def test_a_cancelled_checkout_says_nothing_was_charged(studio, page, checkout):
    page.goto(studio.url + "/marketplace")
    card(page, "phi3:mini").get_by_role("button", name="Buy for $2.99 Phi-3 Mini").click()
    expect(page).to_have_url(re.compile(r"^https://checkout\.stripe\.test/"))
    page.get_by_role("link", name="Back").click()

    banner = page.locator("#purchase-banner")
    expect(banner).to_contain_text("Checkout cancelled")
    expect(banner).to_contain_text("You were not charged")
    expect(card(page, "phi3:mini").get_by_role("button", name="Buy for $2.99 Phi-3 Mini")).to_be_enabled()
    expect(card(page, "phi3:mini").locator(".badge.owned")).to_have_count(0)
