"""The walk of a new visitor, in a real browser against a real studio (test-mode payments).

Landing page -> marketplace -> buy a model -> watch the progress bar (in a second tab too, and across a
reload) reach installed -> chat with it: the answer streams in, Stop stops it, and a `<script>` the model
writes shows as text. Pulls are slowed down so there is an install to watch.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.frontend.conftest import LONG_REPLY
from tests.frontend.support import CSP, answers, card, percent, send, wait_for_percent
from tests.support import wait_sync

STUDIO = {"skip_payment": True, "pull_speed": 15_000, "tokens_per_s": 15}
MODEL, NAME = "llama3.2:1b", "Llama 3.2 1B"


def test_a_new_visitor_buys_a_model_watches_it_install_and_chats_with_it(studio, context, page):
    # the landing page says what this is and leads to the marketplace
    response = page.goto(studio.url + "/")
    assert response.headers["content-security-policy"] == CSP
    expect(page.get_by_role("heading", level=1)).to_have_text("Open AI models, running on your own server")
    expect(page.locator("#featured")).to_contain_text("TinyLlama")
    page.get_by_role("link", name="Browse the marketplace").click()
    expect(page).to_have_url(studio.url + "/marketplace")
    expect(page.get_by_text("Purchases are simulated")).to_be_visible()

    # buy a paid model in test mode: the card starts showing the install
    model = card(page, MODEL)
    model.get_by_role("button", name=f"Buy for $1.99 {NAME}").click()
    expect(model.locator(".card-message")).to_have_text("Test purchase successful. The server is installing it now.")
    expect(model.locator(".badge.owned")).to_be_visible()
    expect(model.locator(".badge.installing")).to_be_visible()
    first = wait_for_percent(page, MODEL, above=5)
    expect(model.locator(".install-figures")).to_contain_text(re.compile(r"\d+% · [\d.]+ KB of [\d.]+ KB"))

    # a second tab shows the same install, from the event stream
    other = context.new_page()
    other.goto(studio.url + "/marketplace")
    expect(card(other, MODEL).locator(".badge.installing")).to_be_visible()
    wait_for_percent(other, MODEL, above=first)

    # a reload mid-install picks the progress up where it is, not from zero
    before = percent(page, MODEL)
    assert before < 100, "the install finished too fast to watch; slow the pull down"
    page.reload()
    expect(model.locator("progress")).to_be_visible()
    assert percent(page, MODEL) >= before
    expect(model).to_have_attribute("data-install", re.compile("pulling|verifying"))
    wait_for_percent(page, MODEL, above=before)

    # it reaches installed, in both tabs
    expect(model.locator(".badge.installed")).to_have_text("Installed", timeout=30_000)
    expect(card(other, MODEL).locator(".badge.installed")).to_be_visible()
    expect(model.locator("progress")).to_have_count(0)
    other.close()

    # chat with it: the answer streams in
    model.get_by_role("link", name=f"Chat {NAME}").click()
    expect(page).to_have_url(studio.url + "/chat")  # ?model=llama3.2:1b picked the model, then went away
    expect(page.get_by_label("Model")).to_have_value(MODEL)
    send(page, "Hello! Who are you?")
    first_answer = answers(page).nth(0)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(first_answer.locator(".bubble.streaming")).to_contain_text("Sure!")  # part of it, still coming
    expect(first_answer.locator(".bubble")).to_contain_text("That's all.")
    expect(first_answer.locator(".bubble.streaming")).to_have_count(0)
    expect(first_answer.locator("strong")).to_have_text("a short answer")
    expect(first_answer.locator("pre code")).to_have_text('def greet(name):\n    return f"Hello, {name}!"')
    expect(first_answer.locator(".meta")).to_contain_text("tokens/s")
    expect(page.get_by_role("button", name="Send")).to_be_visible()

    # Stop stops it: the browser aborts, the studio stops Ollama, the partial answer stays
    send(page, "Tell me something long")
    long_answer = answers(page).nth(1)
    expect(long_answer.locator(".bubble")).to_contain_text("on and on")
    page.get_by_role("button", name="Stop").click()
    expect(long_answer.locator(".meta")).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    wait_sync(
        lambda: studio.call(lambda: len(studio.ollama.disconnects("chat"))) >= 1,
        message="Ollama's chat stream closed by the studio",
    )
    assert len(long_answer.locator(".bubble").inner_text()) < len(LONG_REPLY) / 2

    # a model that writes HTML gets it shown as text, never run
    send(page, "Show me a script tag")
    bait = answers(page).nth(2).locator(".bubble")
    expect(bait).to_contain_text("<script>window.__xss = 1; alert(1)</script>")
    expect(bait).to_contain_text('<img src=x onerror="window.__xss = 2">')
    expect(answers(page).nth(2).locator(".meta")).to_contain_text("tokens")
    assert bait.locator("script, img").count() == 0
    assert page.evaluate("() => window.__xss") is None

    # the conversation is kept in the browser
    page.reload()
    expect(page.locator(".message.user")).to_have_count(3)
    expect(answers(page).nth(2)).to_contain_text("<script>")
    expect(page.get_by_role("button", name=re.compile("^Hello! Who are you"))).to_be_visible()
