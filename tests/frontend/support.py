"""What the browser tests say often: find a model's card, read its progress, send a chat message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gateway.edge import CSP
from tests.support import wait_sync

__all__ = [
    "CSP",
    "answers",
    "axe_violations",
    "card",
    "install_for_everyone",
    "overflow",
    "percent",
    "send",
    "wait_for_percent",
]


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


AXE = Path(__file__).resolve().parents[1] / ".npm" / "node_modules" / "axe-core" / "axe.min.js"


def axe_violations(page: Any) -> list[str]:
    """axe-core's WCAG 2.x A/AA findings on the page as it is now: ["rule (impact): target", ...]."""
    if not AXE.is_file():
        raise AssertionError(f"axe-core is missing at {AXE}: tests/run installs it (npm, pinned) for the browser tier")
    if not page.evaluate("() => Boolean(window.axe)"):
        page.evaluate(AXE.read_text())  # evaluated by the driver, not a <script>: the page's CSP stays in force
    found = page.evaluate(
        """async () => {
             const r = await axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a",
               "wcag21aa", "best-practice"]}, resultTypes: ["violations"]});
             return r.violations.flatMap((v) => v.nodes.map((n) => `${v.id} (${v.impact}): ${n.target.join(" ")}`));
           }"""
    )
    return list(found)


def overflow(page: Any) -> list[str]:
    """What makes the page wider than the window: the document's own scroll width, and every visible element
    whose box pokes out on the left or right (those inside a scrolling region are that region's business)."""
    return list(
        page.evaluate(
            """() => {
                 const width = window.innerWidth, out = [];
                 const doc = document.scrollingElement.scrollWidth;
                 if (doc > width) out.push(`document is ${doc} px wide in a ${width} px window`);
                 const inScroller = (el) => {
                   for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
                     const s = getComputedStyle(p);
                     if (s.overflowX !== "visible" || s.position === "fixed") return true;
                   }
                   return false;
                 };
                 for (const el of document.body.querySelectorAll("*")) {
                   const r = el.getBoundingClientRect();
                   if (!r.width || !r.height || getComputedStyle(el).visibility === "hidden") continue;
                   if (el.closest(".sr-only, .offscreen, .skip-link")) continue;
                   if ((r.right > width + 1 || r.left < -1) && !inScroller(el)) {
                     const classes = typeof el.className === "string" ? el.className.trim().split(/\\s+/) : [];
                     const name = el.tagName.toLowerCase() + (el.id ? `#${el.id}` : "") +
                       classes.filter(Boolean).map((c) => `.${c}`).join("");
                     out.push(`${name} spans ${Math.round(r.left)}..${Math.round(r.right)} px`);
                   }
                 }
                 return out.slice(0, 15);
               }"""
        )
    )
