"""Every page: served from our origin under the gateway's CSP without a console error, the landing page's
featured model, the marketplace's search and filters, phones, keyboards and labels."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.frontend.conftest import PHONE, new_context
from tests.frontend.support import CSP, card

STUDIO = {"skip_payment": True}
PAGES = {
    "/": "Open AI models, running on your own server",
    "/marketplace": "Marketplace",
    "/chat": "Chat",
}


def wait_until_ready(page, path):
    if path == "/":
        expect(page.locator("#featured")).not_to_have_attribute("aria-busy", "true")
    elif path == "/marketplace":
        expect(page.locator("article.model")).to_have_count(14)
        expect(page.locator("#live")).to_have_text("Live updates on")
    elif path == "/chat":
        expect(page.get_by_label("Model")).not_to_have_text("Loading your models…")


def test_every_page_comes_from_our_origin_under_the_csp_without_errors(studio, page):
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    for path, heading in PAGES.items():
        response = page.goto(studio.url + path)
        assert response.status == 200
        assert response.headers["content-security-policy"] == CSP
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        wait_until_ready(page, path)
    assert requested and all(url.startswith(studio.url + "/") for url in requested), requested
    assert any(url.endswith(".js") for url in requested) and any(url.endswith(".css") for url in requested)
    # no console errors, uncaught exceptions or CSP violations: checked by the `context` fixture


def test_an_unknown_page_gets_a_helpful_404(studio, page, watch):
    watch.allow(r"status of 404")  # Chromium's note about the document's own status
    response = page.goto(studio.url + "/no-such-page")
    assert response.status == 404
    assert response.headers["content-security-policy"] == CSP
    expect(page.get_by_role("heading", level=1)).to_have_text("This page doesn't exist")
    page.get_by_role("link", name="Browse the marketplace").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Marketplace")


def test_the_landing_page_gets_the_featured_free_model_in_one_click(studio, page):
    page.goto(studio.url + "/")
    featured = page.locator("#featured")
    expect(featured.get_by_role("heading", name="TinyLlama")).to_be_visible()
    expect(featured).to_contain_text("Free")
    expect(featured).to_contain_text("638 MB")
    featured.get_by_role("button", name="Get TinyLlama free").click()

    expect(page).to_have_url(studio.url + "/marketplace#model-tinyllama-latest")
    tiny = card(page, "tinyllama:latest")
    expect(tiny).to_have_class(re.compile(r"\bhighlight\b"))
    expect(tiny.locator(".badge.owned")).to_be_visible()
    expect(tiny.locator(".badge.installed")).to_be_visible(timeout=30_000)

    page.goto(studio.url + "/")
    expect(featured.get_by_role("link", name="Chat with TinyLlama")).to_have_attribute(
        "href", "/chat?model=tinyllama%3Alatest"
    )


def test_search_and_filters_narrow_the_models_and_survive_a_reload(studio, page):
    page.goto(studio.url + "/marketplace")
    shown = page.locator("article.model:visible")
    count = page.locator("#result-count")
    expect(shown).to_have_count(14)
    expect(count).to_have_text("14 models")

    page.get_by_label("Search").fill("qwen")
    expect(count).to_have_text("Showing 3 of 14 models")  # two Qwen models and DeepSeek-R1 (qwen2 family)
    page.get_by_label("Price").select_option("free")
    expect(shown).to_have_count(1)
    expect(shown.get_by_role("heading")).to_have_text("Qwen 2.5 0.5B")

    page.reload()
    expect(page.get_by_label("Search")).to_have_value("qwen")
    expect(page.get_by_label("Price")).to_have_value("free")
    expect(shown).to_have_count(1)

    page.get_by_label("Search").fill("no such model anywhere")
    expect(page.get_by_role("heading", name="No models match these filters")).to_be_visible()
    page.get_by_role("button", name="Clear filters").click()
    expect(shown).to_have_count(14)
    expect(page.get_by_label("Search")).to_be_focused()

    page.get_by_label("Family").select_option("gemma2")
    expect(shown).to_have_count(2)
    page.get_by_label("Family").select_option("")
    page.get_by_label("Size").select_option("large")
    expect(shown).to_have_count(7)  # every 7B-and-up model
    page.get_by_label("Size").select_option("")
    page.get_by_label("Sort by").select_option("price")
    prices = shown.locator(".price").all_inner_texts()
    assert prices[:4] == ["Free"] * 4 and prices[4] == "$1.99", prices


def test_capabilities_show_as_badges_and_filter_the_models(studio, page):
    page.goto(studio.url + "/marketplace")
    shown = page.locator("article.model:visible")
    llava = card(page, "llava:7b")
    expect(llava.get_by_role("list", name="Capabilities").get_by_role("listitem")).to_have_text(["Chat", "Vision"])
    expect(llava.locator(".specs")).to_contain_text("32K tokens")
    expect(llava.locator(".specs")).to_contain_text("Q4_0")
    expect(card(page, "deepseek-r1:7b").locator(".capability.thinking")).to_have_text("Thinking")

    page.get_by_label("Can do").select_option("vision")
    expect(shown).to_have_count(1)
    expect(shown).to_have_attribute("data-model", "llava:7b")
    page.get_by_label("Can do").select_option("tools")
    expect(shown).to_have_count(6)  # the Llama 3.x, Qwen 2.5 and Mistral models
    page.reload()
    expect(page.get_by_label("Can do")).to_have_value("tools")
    expect(shown).to_have_count(6)
    assert "capability=tools" in page.url

    page.get_by_label("Can do").select_option("embedding")
    embed = card(page, "nomic-embed-text:latest")
    expect(shown).to_have_count(1)
    expect(embed.locator(".no-chat")).to_contain_text("can't be opened in the chat")
    embed.get_by_role("button", name="Get it free Nomic Embed Text").click()
    expect(embed.locator(".badge.owned")).to_be_visible()
    expect(embed.locator(".badge.installed")).to_be_visible(timeout=30_000)
    expect(embed.get_by_role("link", name="Chat Nomic Embed Text")).to_have_count(0)


def test_only_my_models_shows_what_the_visitor_owns(studio, page):
    page.goto(studio.url + "/marketplace")
    card(page, "qwen2.5:0.5b").get_by_role("button", name="Get it free Qwen 2.5 0.5B").click()
    expect(card(page, "qwen2.5:0.5b").locator(".badge.owned")).to_be_visible()
    page.get_by_label("Only my models").check()
    expect(page.locator("article.model:visible")).to_have_count(1)
    expect(page.locator("article.model:visible")).to_have_attribute("data-model", "qwen2.5:0.5b")


def test_the_pages_fit_a_phone(studio, browser, watch):
    phone = new_context(browser, watch, **PHONE)
    try:
        page = phone.new_page()
        for path in PAGES:
            page.goto(studio.url + path)
            wait_until_ready(page, path)
            width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], f"{path} scrolls sideways on a phone: {width}"
            nav = page.get_by_role("navigation", name="Main")
            expect(nav).to_be_hidden()  # folded into the header's menu
            menu = page.get_by_role("button", name="Menu")
            menu.click()
            expect(menu).to_have_attribute("aria-expanded", "true")
            for name in ("Home", "Marketplace", "Chat"):
                expect(nav.get_by_role("link", name=name)).to_be_visible()
            page.keyboard.press("Escape")
            expect(nav).to_be_hidden()
            expect(menu).to_be_focused()
        # the chat's conversation list is a drawer on a phone
        sidebar = page.get_by_role("complementary", name="Conversations")
        expect(sidebar).to_be_hidden()
        toggle = page.get_by_role("button", name="Conversations", exact=True)
        toggle.click()
        expect(sidebar).to_be_visible()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        page.keyboard.press("Escape")
        expect(sidebar).to_be_hidden()
        expect(toggle).to_be_focused()
    finally:
        phone.close()


def test_keyboard_users_get_a_skip_link_visible_focus_and_labelled_controls(studio, page):
    page.goto(studio.url + "/marketplace")
    expect(page.locator("article.model")).to_have_count(14)
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Search")).to_be_focused()

    for _ in range(30):  # on to the first card's button, by keyboard only
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('article.model button')"):
            break
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); "
        "return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
    )
    assert outline[0] != "none" and outline[1] >= 2, outline
    bought = page.evaluate("() => document.activeElement.closest('article').dataset.model")
    page.keyboard.press("Enter")  # buy it: the button is replaced, the focus stays in its card
    expect(card(page, bought).locator(".badge.owned")).to_be_visible()
    assert page.evaluate("() => document.activeElement.closest('article')?.dataset.model") == bought

    for path in PAGES:
        page.goto(studio.url + path)
        wait_until_ready(page, path)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
            .filter((el) => el.getClientRects().length)
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !el.textContent.trim() && !el.querySelector('img[alt]:not([alt=""])'))
            .map((el) => el.outerHTML.slice(0, 80))""")
        assert unlabelled == [], f"{path}: controls without a name: {unlabelled}"
