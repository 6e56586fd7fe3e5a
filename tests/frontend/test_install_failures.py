"""A failed install on the marketplace: the card says why, and Retry installs the model again; a failure the
server retries by itself says so and then recovers on its own."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.frontend.support import card
from tests.support import wait_sync

STUDIO = {"skip_payment": True}


def test_a_failed_install_shows_the_reason_and_retry_installs_it(studio, page):
    model_id = "gemma2:2b"
    kept = studio.call(lambda: studio.ollama.registry_model(model_id))
    studio.call(lambda: studio.ollama.remove_model(model_id))  # the pull fails for good: not in the library
    page.goto(studio.url + "/marketplace")
    model = card(page, model_id)
    model.get_by_role("button", name="Get it free Gemma 2 2B").click()

    reason = "the model is not in Ollama's library (check the catalog entry) (pull model manifest: file does not exist)"
    expect(model.locator(".install-error")).to_have_text(f"The install failed: {reason}.")
    expect(model.locator(".badge.failed")).to_have_text("Install failed")
    expect(page.locator("#announcer")).to_have_text(f"Gemma 2 2B failed to install: {reason}")
    retry = model.get_by_role("button", name="Retry install Gemma 2 2B")
    page.reload()  # the failure is the server's state, not the page's
    expect(retry).to_be_visible()

    studio.call(lambda: studio.ollama.add_model(model_id, kept))
    retry.click()
    expect(model.locator(".badge.installed")).to_be_visible(timeout=30_000)
    expect(model.locator(".install-error")).to_have_count(0)
    expect(page.locator("#announcer")).to_have_text("Gemma 2 2B is installed. You can chat with it now.")


def test_a_failure_the_server_retries_says_so_and_recovers(studio, page):
    model_id = "phi3:mini"
    studio.call(lambda: studio.ollama.fail_next_pulls(model_id, 1))
    page.goto(studio.url + "/marketplace")
    model = card(page, model_id)
    model.get_by_role("button", name="Buy for $2.99 Phi-3 Mini").click()

    expect(model.locator(".install-error")).to_contain_text("The install failed:")
    expect(model.locator(".install-note")).to_contain_text("The server will try again in about")
    expect(model.locator(".badge.installed")).to_be_visible(timeout=30_000)


def test_an_install_that_ends_while_the_page_is_offline_is_told_when_it_reconnects(studio, page, watch):
    model_id = "codellama:7b"  # not in the stand-in's library: its install fails for good
    watch.allow("ERR_FAILED")  # the live stream refused below
    page.route("**/api/events", lambda route: route.abort())  # the page gets no live updates...
    page.goto(studio.url + "/marketplace")
    model = card(page, model_id)
    model.get_by_role("button", name="Buy for $5.99 Code Llama 7B").click()
    expect(model.locator(".badge.owned")).to_be_visible()

    def failed() -> bool:  # ...while the server tries the install and fails
        with httpx.Client(base_url=studio.url, timeout=10) as client:
            models = client.get("/api/models").json()["models"]
        return next(m for m in models if m["id"] == model_id)["install"]["state"] == "failed"

    wait_sync(failed, timeout=30, interval=0.1, message="the install failed on the server")
    page.unroute("**/api/events")  # back online: the stream's first message is the state of every install

    expect(model.locator(".install-error")).to_contain_text("not in Ollama's library", timeout=30_000)
    expect(page.locator("#announcer")).to_contain_text("Code Llama 7B failed to install:")
