"""The console's overview after a buyer's test-mode purchases, chats and a rehearsed refund: its figures match
what happened, its charts have data points (and their tables the same numbers), buyers show by e-mail, and
everything moves live as new events come, without a reload."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.frontend.conftest import FUNCTIONS, OPERATOR_TOKEN
from tests.frontend.support import install_for_everyone
from tests.support import wait_sync

STUDIO = {"skip_payment": True, "functions": (*FUNCTIONS, "monitor")}
BUYER = "buyer@example.com"
FREE = "tinyllama:latest"


@pytest.fixture(autouse=True)
def health_may_fail(watch):
    watch.allow(r"status of 503")  # /health answers 503 while a component is failing: the overview says so


def sign_in(page, studio) -> None:
    page.goto(studio.url + "/admin")
    page.get_by_label("Operator token (STUDIO_ADMIN_TOKEN)").fill(OPERATOR_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#console")).to_be_visible()


def chat(buyer: httpx.Client, text: str) -> None:
    answer = buyer.post("/api/chat", json={"model": FREE, "message": text, "stream": False}, timeout=30)
    assert answer.status_code == 200, answer.text


def points(page, chart: str) -> int:
    return int(page.locator(f"#{chart}").get_attribute("data-points") or 0)


def test_the_overview_counts_what_happened_and_moves_live(studio, page) -> None:
    install_for_everyone(studio, FREE)
    buyer = httpx.Client(base_url=studio.url, timeout=10)
    buyer.get("/")
    assert (
        buyer.post("/api/auth/signup", json={"email": BUYER, "password": "a long enough password"}).status_code == 201
    )
    bought = [buyer.post(f"/api/models/purchase/{m}").json() for m in ("llama3.2:1b", "phi3:mini")]
    assert [b["status"] for b in bought] == ["success", "success"]
    chat(buyer, "Hello")
    chat(buyer, "Hello again")

    sign_in(page, studio)

    expect(page.locator("#test-mode")).to_be_visible()
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    sales = page.locator("#stat-sales")
    expect(sales.locator(".stat-value")).to_have_text("0 / 0")  # nothing live: test mode
    expect(sales.locator(".stat-note")).to_have_text("0 purchases, 0 refunds; test: 2 / 0")
    expect(page.locator("#stat-revenue .stat-note")).to_have_text("test: $4.98")  # $1.99 + $2.99
    expect(page.locator("#stat-answers .stat-value")).to_have_text("2")
    assert points(page, "sales-chart") == 1 and points(page, "answers-chart") == 1 and points(page, "tokens-chart") == 1
    bar = page.locator('#sales-chart rect.bar[data-series="Test sales"]')
    expect(bar).to_have_attribute("data-value", "2")
    expect(page.locator("#sales-chart svg")).to_have_attribute("aria-label", re.compile(r"Test sales 2"))
    page.locator("#sales-chart summary").click()
    expect(page.locator("#sales-chart table tbody tr")).to_have_count(1)  # the same numbers, as a table
    expect(page.locator("#sales-chart table tbody tr td").nth(3)).to_have_text("2")
    expect(page.locator("#nodes-chart li[data-label]")).to_have_count(1)
    expect(page.locator('#health-components li[data-component="nats"]')).to_contain_text("nats: ok")
    expect(page.locator('#consumers tr[data-consumer="purchase__settle_payment"]')).to_have_count(1)
    row = page.locator(f'#purchases tr[data-purchase="{bought[0]["purchase_id"]}"]')
    expect(row).to_contain_text(BUYER)  # asked of accounts: the purchase itself carries no e-mail
    expect(row.locator(".badge.test")).to_have_text("test")

    # A rehearsed refund, through the console: no Stripe, and the overview follows by itself.
    row.get_by_role("button", name=f"Refund {bought[0]['purchase_id']}").click()
    expect(row).to_contain_text("Test mode: no money moves.")
    row.get_by_role("button", name="Confirm refund").click()
    expect(page.locator("#notice")).to_have_text(
        "Test refund of $1.99 for llama3.2:1b rehearsed: no money moved; access ends as with a real refund."
    )
    assert studio.call(lambda: list(studio.stripe.refund_requests)) == []
    expect(sales.locator(".stat-note")).to_have_text("0 purchases, 0 refunds; test: 2 / 1")
    expect(page.locator("#stat-revenue .stat-note")).to_have_text("test: $2.99")
    expect(page.locator('#sales-chart rect.bar[data-series="Test refunds"]')).to_have_attribute("data-value", "1")
    wait_sync(
        lambda: buyer.get(f"/api/purchases/{bought[0]['purchase_id']}").json()["status"] == "refunded",
        message="the refund revoked the purchase",
    )

    # New events elsewhere: another purchase and another answer show up without a reload.
    assert buyer.post("/api/models/purchase/mistral:7b").json()["status"] == "success"
    chat(buyer, "One more")
    expect(sales.locator(".stat-note")).to_have_text("0 purchases, 0 refunds; test: 3 / 1")
    expect(page.locator("#stat-answers .stat-value")).to_have_text("3")
    expect(page.locator('#answers-chart rect.bar[data-series="tinyllama:latest"]')).to_have_attribute("data-value", "3")
    expect(page.locator("#overview-live")).to_have_text("Live: updates as events happen")
    assert page.evaluate("window.__sameDocument") is True
