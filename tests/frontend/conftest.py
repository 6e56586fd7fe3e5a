"""Browser tests: a real studio on a real port, driven by Playwright through Debian's Chromium.

The studio (nats-server, the purchase, install, webhook and chat functions behind the embedded gateway,
the Ollama and Stripe stand-ins) runs in a thread with its own event loop: sync Playwright owns the main
thread and would clash with asyncio there (docs/browser-and-nginx-tests.md). For the same
reason these tests run after every asyncio test (`pytest_collection_modifyitems` below).

Every page a test opens is watched: a console error, an uncaught exception or a Content-Security-Policy
violation fails the test unless the test declared it expected (`watch.allow(...)`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from events.server import NatsServer
from functions import load
from gateway.app import gateway_app
from studio.runtime.host import Host
from studio.runtime.settings import Secret, Settings
from tests.conftest import free_port
from tests.doubles.ollama import OllamaDouble, tokenize
from tests.doubles.stripe import StripeDouble

HERE = Path(__file__).resolve().parent
FUNCTIONS = ("accounts", "chat", "purchase", "install", "webhook", "health")  # health: pages ask /health
OPERATOR_TOKEN = "op-console-token"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or next(
    (p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if os.path.exists(p)), None
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}

XSS_REPLY = 'Here you go: <script>window.__xss = 1; alert(1)</script> and <img src=x onerror="window.__xss = 2">'
MARKDOWN_REPLY = (
    "Sure! Here is **a short answer** with *emphasis* and `inline code`.\n\n"
    "- first point\n- second point\n\n"
    '```python\ndef greet(name):\n    return f"Hello, {name}!"\n```\n\n'
    "That's all."
)
LONG_REPLY = " ".join(["This answer goes on and on, word after word, so that it can be stopped."] * 40)


def studio_reply(body: dict[str, Any]) -> list[str]:
    """What the Ollama stand-in answers, by the last question: XSS bait, a long answer, or some markdown."""
    question = next((m.get("content", "") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
    if "script" in question.lower():
        return tokenize(XSS_REPLY)
    if "long" in question.lower():
        return tokenize(LONG_REPLY)
    return tokenize(MARKDOWN_REPLY)


# -- the studio, in its own thread --------------------------------------------------------------------------


class LiveStudio:
    """The studio on http://127.0.0.1:<port>, its event loop in a background thread."""

    def __init__(
        self,
        root: Path,
        *,
        skip_payment: bool = True,
        pull_speed: float = 0.0,
        tokens_per_s: float = 40.0,
        functions: tuple[str, ...] = FUNCTIONS,
    ) -> None:
        self.root = root
        self.functions = functions
        self.skip_payment = skip_payment
        self.pull_speed = pull_speed
        self.tokens_per_s = tokens_per_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="live-studio", daemon=True)
        self.url = ""
        self.nats: NatsServer | None = None
        self.ollama: OllamaDouble | None = None
        self.stripe: StripeDouble | None = None
        self.host: Host | None = None
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, fn: Callable[[], Any], timeout: float = 30) -> Any:
        """Run `fn` on the studio's loop (awaited if it returns a coroutine) and return its result."""

        async def wrapper() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def start(self) -> LiveStudio:
        self.thread.start()
        self.call(self._start, timeout=60)
        return self

    async def _start(self) -> None:
        self.nats = NatsServer(self.root / "nats", port=free_port())
        await self.nats.start()
        self.ollama = OllamaDouble(
            pull_speed=self.pull_speed, pull_interval=0.05, tokens_per_s=self.tokens_per_s, reply=studio_reply
        )
        await self.ollama.start()
        self.stripe = StripeDouble()
        await self.stripe.start()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        settings = Settings.from_env({}).replace(
            data_dir=self.root / "data",
            port=port,
            nats_url=self.nats.url,
            ollama_url=self.ollama.url,
            heartbeat_s=0.5,
            shutdown_grace_s=2.0,
            nats_connect_timeout_s=5.0,
            server_memory_bytes=64 * 1024**3,  # every catalog model fits, whatever this host has
            functions=self.functions,
            skip_payment=self.skip_payment,
            stripe_api_base=self.stripe.url,
            stripe_secret_key=Secret(self.stripe.api_key),
            stripe_webhook_secret=Secret(self.stripe.webhook_secret),
            public_url=self.url,
            admin_token=Secret(OPERATOR_TOKEN),
        )
        fns = [load(name) for name in self.functions]
        self.host = Host(fns, settings)
        await self.host.start()
        self.runner = web.AppRunner(gateway_app(settings, functions=fns, bus=self.host.bus), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.host is not None:
            await self.host.stop()
        for double in (self.stripe, self.ollama):
            if double is not None:
                await double.stop()
        if self.nats is not None:
            self.nats.stop()

    def stop(self) -> None:
        try:
            self.call(self._stop, timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def configure_ollama(self, **attrs: Any) -> None:
        """Change the Ollama stand-in (pull_speed, tokens_per_s, reply...) from a test."""

        def apply() -> None:
            for name, value in attrs.items():
                setattr(self.ollama, name, value)

        self.call(apply)


@pytest.fixture(scope="module")
def studio(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStudio]:
    """One studio per test module; a module sets `STUDIO = {"skip_payment": False, ...}` to change it."""
    options = getattr(request.module, "STUDIO", {})
    live = LiveStudio(tmp_path_factory.mktemp("studio"), **options).start()
    yield live
    live.stop()


# -- the browser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or shutil.which(CHROMIUM) is None:
        pytest.fail("Chromium is missing: tests/run installs Debian's `chromium` package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageWatch:
    """Console errors, uncaught exceptions and CSP violations of every page in a browser context."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        """A console error this test expects (e.g. the browser's note about a 429 response)."""
        self.allowed.append(re.compile(pattern))

    def attach(self, page: Any) -> Any:
        page.on("console", lambda msg: self.problems.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        page.on("dialog", self._dialog)
        return page

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.type} {dialog.message!r}")  # the studio never opens one
        dialog.dismiss()

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]


CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__reportViolation(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""


def new_context(browser: Any, watch: PageWatch, **options: Any) -> Any:
    options.setdefault("viewport", DESKTOP)
    context = browser.new_context(locale="en-US", **options)
    context.expose_function("__reportViolation", lambda text: watch.problems.append(f"CSP violation: {text}"))
    context.add_init_script(CSP_WATCH)
    context.on("page", watch.attach)
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def context(browser: Any, watch: PageWatch) -> Iterator[Any]:
    """A fresh browser context: a new visitor (own cookie, own localStorage), watched for errors."""
    ctx = new_context(browser, watch)
    yield ctx
    ctx.close()
    assert watch.unexpected() == [], "the pages logged errors or violated the CSP"


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


# -- run last ---------------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests after everything else: sync Playwright leaves the main thread looking like it runs an
    event loop, which breaks asyncio tests that come after it. Only these tests move."""
    mine = {id(item) for item in items if HERE in Path(str(item.path)).parents}
    if mine:
        items[:] = [item for item in items if id(item) not in mine] + [item for item in items if id(item) in mine]
