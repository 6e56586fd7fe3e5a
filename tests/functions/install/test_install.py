"""Installing: retried through failures, one pull per model, reconciled with Ollama, removable."""

from __future__ import annotations

import asyncio

import pytest

from events.delivery import Delivery
from events.envelope import Event
from functions import load
from functions.install.handler import INSTALLER
from studio import catalog
from tests.functions.pipeline import OPERATOR, start_studio
from tests.support import eventually


@pytest.fixture
async def test_mode(embedded_studio, settings, ollama, stripe_api, bus):
    return await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)


async def buy(studio, model: str, visitor=None) -> None:
    if visitor is None:
        resp = await studio.client.post(f"/api/models/purchase/{model}")
    else:
        resp = await visitor.post(studio.url(f"/api/models/purchase/{model}"))
    assert resp.status == 200, await resp.text()


async def test_a_failed_download_is_retried_and_ends_installed(test_mode) -> None:
    studio = test_mode
    studio.ollama.fail_next_pulls("llama3.2:1b", n=1)

    await buy(studio, "llama3.2:1b")

    failed = await studio.wait_for_event("install.failed", "llama3.2:1b")
    assert failed[0].data["will_retry"] is True and failed[0].data["retry_in_s"] > 0
    assert "max retries exceeded" in failed[0].data["reason"]
    studio.ollama.pull_speed = 0  # the retry's pull at once
    await studio.wait_for_event("install.completed", "llama3.2:1b")
    assert studio.ollama.pull_count("llama3.2:1b") == 2


async def test_a_cut_stream_is_retried(test_mode) -> None:
    studio = test_mode
    studio.ollama.cut_next_pulls("phi3:mini", n=1)

    await buy(studio, "phi3:mini")

    failed = await studio.wait_for_event("install.failed", "phi3:mini")
    assert failed[0].data["will_retry"] is True
    studio.ollama.pull_speed = 0  # the retry's pull at once
    await studio.wait_for_event("install.completed", "phi3:mini")


async def test_ollama_down_then_back_ends_installed(test_mode) -> None:
    studio = test_mode
    async with studio.ollama.down():
        await buy(studio, "gemma2:2b")
        failed = await studio.wait_for_event("install.failed", "gemma2:2b")
        assert "unreachable" in failed[0].data["reason"] and failed[0].data["will_retry"] is True
    studio.ollama.pull_speed = 0  # the retry's pull at once
    await studio.wait_for_event("install.completed", "gemma2:2b", timeout=20)


async def test_a_model_ollama_cannot_find_fails_visibly_and_the_owner_can_retry(test_mode) -> None:
    studio = test_mode  # codellama:7b is in the catalog but not in the stand-in's registry
    await buy(studio, "codellama:7b")

    failed = await studio.wait_for_event("install.failed", "codellama:7b")
    assert failed[0].data["will_retry"] is False
    assert "not in Ollama's library" in failed[0].data["reason"]
    shown = await eventually(lambda: _state(studio, "codellama:7b", "failed"), message="failed state shown")
    assert shown["install"]["will_retry"] is False and shown["install"]["reason"]

    studio.ollama.add_model("codellama:7b", 40_000)
    resp = await studio.client.post("/api/models/install", json={"model": "codellama:7b"})
    body = await resp.json()
    assert resp.status == 202 and body["install_id"].startswith("ins_")
    completed = await studio.wait_for_event("install.completed", "codellama:7b")
    assert completed[-1].data["install_id"] == body["install_id"]


async def _state(studio, model: str, state: str):
    shown = await studio.model(model)
    return shown if shown["install"]["state"] == state else None


async def test_the_last_attempt_leaves_a_failed_state_instead_of_retrying(test_mode) -> None:
    studio = test_mode
    install = load("install")
    model = catalog.load().get("mistral:7b")
    assert model is not None
    event = Event(type="purchase.completed", source="/tests", data={})
    last = Delivery(event=event, consumer="install__install_model", attempt=8, max_attempts=8)

    async with studio.ollama.down():
        await install[INSTALLER].install(model, "ins_last_try", last)  # returns: nothing to retry

    failed = await studio.wait_for_event("install.failed", "mistral:7b")
    assert failed[0].data["will_retry"] is False and failed[0].data["attempt"] == 8


async def test_two_visitors_buying_one_model_share_one_pull(test_mode) -> None:
    studio = test_mode
    studio.ollama.pull_speed = 30_000  # seconds: the second purchase reaches the installer while the first pulls
    async with studio.visitor() as other:
        await asyncio.gather(buy(studio, "llama3.2:3b"), buy(studio, "llama3.2:3b", other))
        await studio.wait_for_event("purchase.completed", "llama3.2:3b", count=2)
        await eventually(lambda: _both_handed_over(studio), message="both purchases at the installer")
        assert not studio.ollama.is_installed("llama3.2:3b"), "the first pull is still under way"
        studio.ollama.pull_speed = 0  # the rest of the pull at once
        await studio.wait_for_event("install.completed", "llama3.2:3b")
        assert len(studio.of_type("purchase.completed", "llama3.2:3b")) == 2
        assert studio.ollama.pull_count("llama3.2:3b") == 1
        assert (await studio.model("llama3.2:3b", other))["owned"] is True


async def _both_handed_over(studio) -> bool:
    """The installer has been given both purchases: one pulling (unacknowledged), nothing left to deliver."""
    (lag,) = [lag for lag in await studio.bus.consumer_lags() if lag.consumer == "install__install_model"]
    return lag.pending == 0 and lag.ack_pending <= 1


async def test_an_installed_model_is_not_pulled_again(test_mode) -> None:
    studio = test_mode
    await buy(studio, "tinyllama:latest")
    await studio.wait_for_event("install.completed", "tinyllama:latest")
    async with studio.visitor() as other:
        await buy(studio, "tinyllama:latest", other)
        await studio.wait_for_event("purchase.completed", "tinyllama:latest", count=2)
        await eventually(lambda: _state(studio, "tinyllama:latest", "installed"), message="still installed")
    assert studio.ollama.pull_count("tinyllama:latest") == 1


async def test_start_up_reconciles_with_what_ollama_has(embedded_studio, settings, ollama, stripe_api, bus) -> None:
    ollama.preinstall("qwen2.5:0.5b")

    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus)

    shown = await eventually(lambda: _state(studio, "qwen2.5:0.5b", "installed"), message="installed")
    assert shown["owned"] is False, "installed for everyone, owned by nobody yet"


async def test_operator_removes_a_model_and_the_owner_reinstalls_for_free(test_mode) -> None:
    studio = test_mode
    await buy(studio, "tinyllama:latest")
    await studio.wait_for_event("install.completed", "tinyllama:latest")

    denied = await studio.client.delete("/api/models/tinyllama:latest")
    removed = await studio.client.delete("/api/models/tinyllama:latest", headers=OPERATOR)

    assert denied.status == 401
    assert removed.status == 200 and (await removed.json()) == {"model": "tinyllama:latest", "removed": True}
    assert not studio.ollama.is_installed("tinyllama:latest")
    shown = await eventually(lambda: _state(studio, "tinyllama:latest", "not_installed"), message="removed")
    assert shown["owned"] is True

    again = await studio.client.post("/api/models/install", json={"model": "tinyllama:latest"})
    assert again.status == 202
    await studio.wait_for_event("install.completed", "tinyllama:latest", count=2)


async def test_install_requests_are_checked(test_mode) -> None:
    studio = test_mode
    studio.ollama.pull_speed = 0  # nothing here watches a pull
    not_owner = await studio.client.post("/api/models/install", json={"model": "mistral:7b"})
    unknown = await studio.client.post("/api/models/install", json={"model": "nope:1b"})
    no_model = await studio.client.post("/api/models/install", json={"name": "mistral:7b"})
    not_json = await studio.client.post(
        "/api/models/install", data=b"model=x", headers={"Content-Type": "application/json"}
    )

    assert not_owner.status == 403 and (await not_owner.json())["error"]["code"] == "not_owner"
    assert unknown.status == 404
    assert no_model.status == 400 and (await no_model.json())["error"]["code"] == "invalid_model"
    assert not_json.status == 400 and (await not_json.json())["error"]["code"] == "invalid_json"

    await buy(studio, "tinyllama:latest")
    await studio.wait_for_event("install.completed", "tinyllama:latest")
    await eventually(lambda: _state(studio, "tinyllama:latest", "installed"), message="installed")
    installed = await studio.client.post("/api/models/install", json={"model": "tinyllama:latest"})
    assert installed.status == 409 and (await installed.json())["error"]["code"] == "already_installed"

    operator = await studio.client.post("/api/models/install", json={"model": "mistral:7b"}, headers=OPERATOR)
    assert operator.status == 202
    await studio.wait_for_event("install.completed", "mistral:7b")


async def test_owned_models_missing_after_a_restore_are_installed_again(
    embedded_studio, settings, ollama, stripe_api, bus
) -> None:
    first = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)
    await buy(first, "tinyllama:latest")
    await first.wait_for_event("install.completed", "tinyllama:latest")
    await first.client.host_runtime.stop()  # the server is gone...
    ollama.uninstall("tinyllama:latest")  # ...and the backup is restored next to an empty Ollama

    restored = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)

    requested = await restored.wait_for_event("install.requested", "tinyllama:latest")
    assert requested[0].data["reason"] == "restore"
    await restored.wait_for_event("install.completed", "tinyllama:latest")
    assert ollama.pull_count("tinyllama:latest") == 2


async def test_a_model_the_operator_removed_stays_removed(test_mode) -> None:
    studio = test_mode
    await buy(studio, "tinyllama:latest")
    await studio.wait_for_event("install.completed", "tinyllama:latest")
    assert (await studio.client.delete("/api/models/tinyllama:latest", headers=OPERATOR)).status == 200
    removed = await studio.wait_for_event("install.removed", "tinyllama:latest")
    assert removed[0].data["by_operator"] is True
    await eventually(lambda: _state(studio, "tinyllama:latest", "not_installed"), message="stays removed")
    assert studio.of_type("install.requested", "tinyllama:latest") == []
