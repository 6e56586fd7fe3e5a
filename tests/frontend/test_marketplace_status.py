"""What the marketplace tells a visitor without being asked: the model server is down (and back), live updates
are off; on a phone the filters fold under one button and the chat's model picker gets the whole row."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.frontend.conftest import PHONE, new_context
from tests.frontend.support import install_for_everyone

STUDIO = {"skip_payment": True}


def test_the_marketplace_says_when_the_model_server_is_down_and_when_it_is_back(studio, page, watch) -> None:
    watch.allow(r"status of 503")  # /health while Ollama is down
    page.clock.install()
    page.goto(studio.url + "/marketplace")
    live = page.locator("#live")
    expect(live).to_have_text("Live updates on")
    expect(page.locator("#server-note")).to_be_hidden()

    studio.call(studio.ollama.go_down)
    try:
        page.clock.fast_forward(31_000)  # the page looks again every 30 s while it is in view
        expect(live).to_have_text("Live updates on · the model server is down")
        note = page.locator("#server-note")
        expect(note).to_be_visible()
        expect(note).to_contain_text("Ollama, which installs and runs the models, cannot be reached right now.")
    finally:
        studio.call(studio.ollama.come_back)
    page.clock.fast_forward(31_000)
    expect(live).to_have_text("Live updates on")
    expect(page.locator("#server-note")).to_be_hidden()


def test_the_marketplace_says_when_live_updates_are_off(studio, page, watch) -> None:
    watch.allow(r"net::ERR_FAILED|ERR_FAILED")  # the refused event stream
    page.route("**/api/events", lambda route: route.abort())
    page.goto(studio.url + "/marketplace")
    expect(page.locator("article.model")).to_have_count(14)  # the catalog still comes (GET /api/models)
    expect(page.locator("#live")).to_have_text("Live updates are off: reconnecting…")


def test_on_a_phone_the_filters_fold_and_the_model_picker_has_room(studio, browser, watch) -> None:
    install_for_everyone(studio, "tinyllama:latest")
    phone = new_context(browser, watch, **PHONE)
    try:
        page = phone.new_page()
        page.goto(studio.url + "/marketplace?price=free")
        search, price = page.get_by_label("Search"), page.get_by_label("Price")
        toggle = page.get_by_role("button", name="Filters (1)")  # says that one filter is set
        expect(search).to_be_visible()
        expect(price).to_be_hidden()
        first = page.locator("article.model").first.bounding_box()
        assert first is not None and first["y"] < 844, "the first model is on the first screen"
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(price).to_have_value("free")
        page.get_by_label("Size").select_option("small")
        expect(page.get_by_role("button", name="Filters (2)")).to_be_visible()

        page.goto(studio.url + "/chat")
        picker = page.get_by_label("Model")
        expect(picker).to_contain_text("TinyLlama")
        box = picker.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert box["width"] >= 250, f"the model picker is squeezed: {box}"
    finally:
        phone.close()
