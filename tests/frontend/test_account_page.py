"""Accounts in the browser: buy anonymously, sign up from the header, see the purchase on the account page;
make a key, copy it, find it in the snippet, revoke it; a wrong password explained, signing out."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from playwright.sync_api import expect

from tests.frontend.conftest import new_context
from tests.frontend.support import card, install_for_everyone

PASSWORD = "correct horse battery"


def sign_up(page, studio, email: str) -> None:
    page.goto(studio.url + "/")
    page.locator("#sign-up-link").click()
    expect(page).to_have_url(re.compile(r"/account#sign-up$"))
    page.locator("#up-email").fill(email)
    page.locator("#up-password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#account-email")).to_have_text(email)


def test_an_anonymous_buyer_is_told_to_sign_in_then_finds_the_purchase_on_the_account_page(studio, page):
    page.goto(studio.url + "/marketplace")
    expect(page.locator("#sign-in-link")).to_be_visible()
    card(page, "llama3.2:3b").get_by_role("button", name=re.compile("^Buy")).click()
    expect(card(page, "llama3.2:3b")).to_contain_text(re.compile("Owned|Installing|Installed|Chat", re.I))
    page.reload()
    expect(page.locator("#account-note")).to_contain_text("Sign in to keep your purchases on every device")

    sign_up(page, studio, "buyer@example.com")

    rows = page.locator("#purchases tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("llama3.2:3b")
    expect(rows.first).to_contain_text("$4.99")
    expect(rows.first).to_contain_text("Paid")
    expect(page.locator("#account-link")).to_have_text("buyer@example.com")  # the header, signed in
    page.goto(studio.url + "/chat")
    expect(page.locator("#account-link")).to_have_text("buyer@example.com")  # on every page


def test_a_key_is_shown_once_copied_used_in_the_snippet_and_revoked(studio, browser, watch):
    ctx = new_context(browser, watch, permissions=["clipboard-read", "clipboard-write"])
    try:
        page = ctx.new_page()
        sign_up(page, studio, "keys@example.com")

        page.get_by_label("Name").fill("my editor")
        page.get_by_role("button", name="Create a key").click()
        shown = page.locator("#new-key-value")
        expect(shown).to_have_text(re.compile(r"^sk-studio-"))
        key = shown.inner_text()
        page.get_by_role("button", name="Copy key").click()
        assert page.evaluate("() => navigator.clipboard.readText()") == key
        expect(page.locator("#snippet-curl")).to_contain_text(f"Bearer {key}")
        expect(page.locator("#snippet-python")).to_contain_text(f'base_url="{studio.url}/v1"')
        # every tool's set-up carries the studio's address, the new key and a model the account may use
        expect(page.locator("#snippet-claude-code")).to_contain_text(f"ANTHROPIC_BASE_URL={studio.url}\n")
        expect(page.locator("#snippet-claude-code")).to_contain_text(f"ANTHROPIC_AUTH_TOKEN={key}")
        expect(page.locator("#snippet-anthropic")).to_contain_text(f'base_url="{studio.url}", api_key="{key}"')
        expect(page.locator("#snippet-codex")).to_contain_text(f'base_url = "{studio.url}/v1"')
        expect(page.locator("#snippet-codex")).to_contain_text('wire_api = "responses"')
        for tool in ("langchain", "open-webui", "llm"):
            expect(page.locator(f"#snippet-{tool}")).to_contain_text(f"{studio.url}/v1")
        model = page.locator("#snippet-model").input_value() or "tinyllama:latest"  # none installed: the free one
        assert f"model_name: {model}" in page.locator("#snippet-llm").inner_text()
        page.get_by_role("button", name="Copy the Claude Code set-up").click()
        assert (
            page.evaluate("() => navigator.clipboard.readText()") == page.locator("#snippet-claude-code").inner_text()
        )
        expect(page.locator("#keys li")).to_have_count(1)
        expect(page.locator("#keys li")).to_contain_text("my editor")

        page.reload()
        expect(page.locator("#keys li")).to_contain_text(key[:14])
        expect(page.get_by_text(key)).to_have_count(0)  # never shown again

        page.get_by_role("button", name="Revoke my editor").click()
        page.get_by_role("button", name="Yes, revoke it").click()
        expect(page.locator("#keys li")).to_have_count(0)

        # A key revoked while its "copy it now" panel is still up: the panel and the snippets let go of it.
        page.get_by_label("Name").fill("short-lived")
        page.get_by_role("button", name="Create a key").click()
        expect(shown).to_have_text(re.compile(r"^sk-studio-"))
        second = shown.inner_text()
        expect(page.locator("#snippet-curl")).to_contain_text(second)
        page.get_by_role("button", name="Revoke short-lived").click()
        page.get_by_role("button", name="Yes, revoke it").click()
        expect(page.locator("#key-status")).to_have_text('Key "short-lived" revoked: it no longer works anywhere.')
        expect(page.locator("#new-key-shown")).to_be_hidden()
        expect(page.get_by_text(second)).to_have_count(0)
        expect(page.locator("#snippet-curl")).to_contain_text("Bearer sk-studio-…")
    finally:
        ctx.close()


def test_wrong_password_is_explained_and_signing_out_works(studio, page, watch):
    watch.allow("status of 401")
    sign_up(page, studio, "careful@example.com")
    page.locator("#sign-out").click()
    expect(page.locator("#sign-in-link")).to_be_visible()

    page.goto(studio.url + "/account#sign-in")
    page.locator("#in-email").fill("careful@example.com")
    page.locator("#in-password").fill("not my password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in .form-error")).to_have_text("Wrong e-mail or password.")  # a sentence

    page.locator("#in-password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#account-email")).to_have_text("careful@example.com")


def test_the_usage_chart_has_an_axis_day_labels_and_its_numbers_beside_it(studio, page):
    install_for_everyone(studio, "tinyllama:latest")
    sign_up(page, studio, "usage@example.com")
    answer = page.request.post(
        studio.url + "/api/chat", data={"model": "tinyllama:latest", "message": "Hello", "stream": False}
    )
    assert answer.ok, answer.text()

    page.reload()

    chart = page.locator("#usage-chart svg")
    expect(chart.locator("rect.bar")).to_have_count(1)
    tokens = int(chart.locator("rect.bar").get_attribute("data-value") or 0)
    assert tokens > 0
    labels = chart.locator("text.tick").all_text_contents()
    today = datetime.now(UTC)
    assert "0" in labels and f"{today.day} {today.strftime('%b')}" in labels, labels  # the y axis and the days
    assert len(labels) >= 3 + 5, labels
    expect(chart).to_have_attribute("aria-label", re.compile(rf"tinyllama:latest {tokens} tokens over 30 days"))
    page.locator("#usage-chart summary").click()
    expect(page.locator("#usage-chart table tbody tr td").nth(1)).to_have_text(f"{tokens} tokens")
