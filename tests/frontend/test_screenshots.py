"""The pictures in the docs (docs/operators/console.md, docs/screenshots/): the marketplace, the chat and the operator
console on a desktop and on a phone, taken from a real studio after some purchases and chats, so they show
the pages as they are today. Each run writes them again; a page that fails to draw fails the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.frontend.conftest import DESKTOP, FUNCTIONS, OPERATOR_TOKEN, PHONE, new_context
from tests.frontend.support import install_for_everyone, send

STUDIO = {"skip_payment": True, "functions": (*FUNCTIONS, "monitor"), "tokens_per_s": 400}
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SIZES: dict[str, dict[str, Any]] = {"desktop": {"viewport": DESKTOP}, "phone": {**PHONE, "device_scale_factor": 1}}


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled", caret="hide")
    assert path.stat().st_size > 10_000, f"{path} looks empty"


def test_the_docs_screenshots_of_the_marketplace_chat_and_console(studio, browser, watch) -> None:
    watch.allow(r"status of 503")  # /health while a component is not fine: the console says so
    install_for_everyone(studio, "tinyllama:latest")
    with httpx.Client(base_url=studio.url, timeout=30) as buyer:
        buyer.get("/")
        buyer.post("/api/auth/signup", json={"email": "ada@example.com", "password": "a long enough password"})
        for model in ("llama3.2:1b", "phi3:mini", "mistral:7b"):
            assert buyer.post(f"/api/models/purchase/{model}").status_code == 200
        for text in ("Hello", "What can you do?", "Thanks"):
            answer = buyer.post("/api/chat", json={"model": "tinyllama:latest", "message": text, "stream": False})
            assert answer.status_code == 200, answer.text

    for size, options in SIZES.items():
        context = new_context(browser, watch, color_scheme="light", **options)
        try:
            page = context.new_page()
            page.goto(studio.url + "/marketplace")
            expect(page.locator("article.model")).to_have_count(14)
            expect(page.locator("#live")).to_have_text("Live updates on")
            shoot(page, f"marketplace-{size}")

            page.goto(studio.url + "/chat?model=tinyllama%3Alatest")
            expect(page.get_by_label("Model")).to_contain_text("TinyLlama")
            send(page, "Show me a short Python function")
            expect(page.locator(".message.assistant .meta")).to_contain_text("tokens")
            shoot(page, f"chat-{size}")

            page.goto(studio.url + "/admin")
            page.get_by_label("Operator token (STUDIO_ADMIN_TOKEN)").fill(OPERATOR_TOKEN)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#stat-answers .stat-value")).not_to_have_text("…")
            expect(page.locator("#sales-chart rect.bar").first).to_be_visible()
            expect(page.locator("#overview-live")).to_have_text("Live: updates as events happen")
            page.locator("#overview-title").scroll_into_view_if_needed()
            shoot(page, f"console-{size}")
        finally:
            context.close()
