"""What the browser tests say often: find a model's card, read its progress, send a chat message."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.edge import CSP
from tests.support import wait_sync

__all__ = ["CSP", "answers", "card", "install_for_everyone", "percent", "send", "wait_for_percent"]


def card(page: Any, model: str) -> Any:
    return page.locator(f'article[data-model="{model}"]')


def percent(page: Any, model: str) -> float:
    return float(card(page, model).locator("progress").evaluate("el => el.value"))


def wait_for_percent(page: Any, model: str, above: float, timeout: float = 20_000) -> float:
    """Wait until the model's progress bar shows more than `above` percent; the value it shows then."""
    page.wait_for_function(
        """([model, above]) => {
             const bar = document.querySelector(`article[data-model="${model}"] progress[value]`);
             return bar && bar.value > above;
           }""",
        arg=[model, above],
        timeout=timeout,
    )
    return percent(page, model)


def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def answers(page: Any) -> Any:
    return page.locator(".message.assistant")


def install_for_everyone(studio: Any, model: str) -> None:
    """Get a free model as some visitor and wait until the server has installed it (free models can be
    chatted with by every visitor once installed)."""
    with httpx.Client(base_url=studio.url, timeout=10) as client:
        client.get("/")  # the visitor cookie
        answer = client.post(f"/api/models/purchase/{model}")
        assert answer.status_code in (200, 409), answer.text

        def installed() -> bool:
            models = client.get("/api/models").json()["models"]
            return next(m for m in models if m["id"] == model)["install"]["state"] == "installed"

        wait_sync(installed, timeout=30, interval=0.1, message=f"{model} installed")
