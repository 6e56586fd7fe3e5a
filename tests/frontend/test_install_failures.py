"""A failed install on the marketplace: the card says why, and Retry installs the model again; a failure the
server retries by itself says so and then recovers on its own."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.frontend.support import card

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
