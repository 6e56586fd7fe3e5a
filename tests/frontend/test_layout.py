"""Every page fits every screen from a 320 px phone to a 1440 px desktop, in light and dark: nothing is wider
than the window (the document does not scroll sideways, no element pokes out; wide tables scroll inside a
focusable region of their own), and axe-core finds nothing (WCAG 2.1 A/AA and best practices), signed out,
signed in, as the operator (/admin, /api/docs) and on the 404 page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.frontend.conftest import FUNCTIONS, OPERATOR_TOKEN, new_context
from tests.frontend.support import axe_violations, overflow

STUDIO = {"skip_payment": True, "functions": (*FUNCTIONS, "monitor")}
WIDTHS = (320, 390, 768, 1440)
PASSWORD = "a long enough password"


@pytest.fixture(autouse=True)
def expected_noise(watch):
    watch.allow(r"status of 404")  # the 404 page's own status
    watch.allow(r"status of 503")  # /health while a component (say, the stand-in's disk) is not fine


def ready(page, path: str) -> None:
    """Wait for what the page fills in after loading, so the check sees the page a person sees."""
    if path == "/":
        expect(page.locator("#featured")).not_to_have_attribute("aria-busy", "true")
    elif path == "/marketplace":
        expect(page.locator("article.model")).to_have_count(14)
        expect(page.locator("#live")).to_have_text("Live updates on")
    elif path == "/chat":
        expect(page.get_by_label("Model")).not_to_have_text("Loading your models…")
    elif path == "/account":
        expect(page.locator("#signed-out, #signed-in").locator("visible=true")).to_have_count(1)
    elif path == "/admin":
        expect(page.locator("#console")).to_be_visible()
        expect(page.locator("#sales-chart svg")).to_have_count(1)
        expect(page.locator("#catalog tbody tr").first).to_be_visible()
    elif path == "/api/docs":
        expect(page.locator("[data-route]").first).to_be_visible()
    if page.locator(".account-menu").count():
        expect(page.locator(".account-menu > *").first).to_be_attached()
    page.evaluate("document.fonts.ready")


def check(page, path: str, problems: list[str]) -> None:
    ready(page, path)
    problems += [f"{path}: {p}" for p in overflow(page)]
    problems += [f"{path}: axe {v}" for v in axe_violations(page)]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_the_screen_and_passes_axe(studio, browser, watch, width, scheme) -> None:
    context = new_context(browser, watch, viewport={"width": width, "height": 800}, color_scheme=scheme)
    problems: list[str] = []
    try:
        page = context.new_page()
        for path in ("/", "/marketplace", "/chat", "/account", "/no-such-page"):
            page.goto(studio.url + path)
            check(page, path, problems)
        if width < 720:  # the header's menu, open
            page.goto(studio.url + "/")
            page.get_by_role("button", name="Menu").click()
            expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Chat")).to_be_visible()
            check(page, "/ (menu open)", problems)

        email = f"layout-{width}-{scheme}@example.com"
        signed_up = context.request.post(studio.url + "/api/auth/signup", data={"email": email, "password": PASSWORD})
        assert signed_up.status == 201, signed_up.text()
        for path in ("/account", "/", "/marketplace", "/chat"):
            page.goto(studio.url + path)
            check(page, f"{path} (signed in)", problems)
        expect(page.locator("#account-link")).to_have_count(1)
    finally:
        context.close()

    operator = new_context(browser, watch, viewport={"width": width, "height": 800}, color_scheme=scheme)
    try:
        page = operator.new_page()
        page.goto(studio.url + "/admin")
        page.get_by_label("Operator token (STUDIO_ADMIN_TOKEN)").fill(OPERATOR_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        check(page, "/admin", problems)
        page.goto(studio.url + "/api/docs")
        check(page, "/api/docs", problems)
    finally:
        operator.close()
    assert problems == [], "\n".join(problems)
