"""The operator's API reference (/api/docs) renders the published contract in Chromium: routes with their
parameters and schemas, the error shape; everything from the studio itself (the CSP watch fails on any
other source). The console's sign-in opens it in the same browser. A visitor's 401 is
tests/gateway/test_openapi.py's."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.frontend.conftest import FUNCTIONS, OPERATOR_TOKEN

STUDIO = {"functions": (*FUNCTIONS, "monitor")}  # the console the operator signs in to


def test_the_operator_reads_the_api_reference_rendered_from_the_contract(studio, context) -> None:
    context.set_extra_http_headers({"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    page = context.new_page()

    page.goto(studio.url + "/api/docs")

    purchase = page.locator('[data-route="POST /api/models/purchase/{model}"]')
    expect(purchase).to_be_visible()
    expect(purchase.locator(".api-params")).to_contain_text("model")
    expect(purchase.locator(".api-responses")).to_contain_text("200")
    chat = page.locator('[data-route="POST /api/chat"]')
    expect(chat.locator(".api-schema").first).to_contain_text("message?: string")
    expect(page.locator("#components")).to_contain_text("error: ErrorDetail {")
    expect(page.locator("#components")).to_contain_text("code: string")
    expect(page.locator("#title")).to_have_text("Local AI Studio API 1.0.0")
    page.get_by_role("link", name="GET /health", exact=True).click()
    expect(page).to_have_url(studio.url + "/api/docs#get-health")


def test_the_operator_signed_in_to_the_console_opens_the_api_reference_in_the_same_browser(studio, page) -> None:
    page.goto(studio.url + "/admin")
    page.get_by_label("Operator token (STUDIO_ADMIN_TOKEN)").fill(OPERATOR_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#console")).to_be_visible()

    response = page.goto(studio.url + "/api/docs")  # no Authorization header: the console's operator cookie

    assert response is not None and response.status == 200
    expect(page.locator('[data-route="POST /api/operator/session"]')).to_be_visible()
    page.goto(studio.url + "/admin")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Operator token (STUDIO_ADMIN_TOKEN)")).to_be_visible()
    assert page.request.get(studio.url + "/api/docs").status == 401
