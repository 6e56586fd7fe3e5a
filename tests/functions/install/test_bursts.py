"""A burst of purchases of a model that is installed already: cheap no-ops that hold no pull back."""

from __future__ import annotations

import uuid

import pytest

from events.catalog import PurchaseCompleted
from events.envelope import Event
from tests.functions.pipeline import start_studio
from tests.support import eventually

INSTALLED = "tinyllama:latest"
NEW = "phi3:mini"
RECONCILED = "ins_found_in_ollama"  # the install id of what start-up reconciliation finds in Ollama


@pytest.fixture
async def test_mode(embedded_studio, settings, ollama, stripe_api, bus):
    ollama.preinstall(INSTALLED)
    return await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)


def purchase(model: str) -> Event:
    data = PurchaseCompleted(
        purchase_id="pur_" + uuid.uuid4().hex[:20],
        user_id="v_" + uuid.uuid4().hex[:8],
        model=model,
        kind="test",
        amount_cents=0,
        currency="usd",
    )
    return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject)


async def test_a_burst_of_no_op_installs_is_handled_together_and_a_new_model_still_pulls(test_mode) -> None:
    studio = test_mode
    await eventually(lambda: _installed(studio, INSTALLED), message="reconciled with Ollama at start-up")
    tags_before = sum(1 for _, path in studio.ollama.requests if path == "/api/tags")

    await studio.bus.publish_many([purchase(INSTALLED) for _ in range(400)])
    await studio.bus.publish(purchase(NEW))

    await studio.wait_for_event("install.completed", NEW, timeout=30)
    await eventually(lambda: _drained(studio), timeout=30, message="every request handled")
    looks = sum(1 for _, path in studio.ollama.requests if path == "/api/tags") - tags_before
    assert looks < 100, f"{looks} looks at Ollama's list for 401 requests: requests arriving together share one"
    assert studio.ollama.pull_count(INSTALLED) == 0
    announced = [e for e in studio.of_type("install.completed", INSTALLED) if e.data["install_id"] != RECONCILED]
    assert announced == [], "no-ops announce nothing (start-up reconciliation announces once, as ins_found_in_ollama)"
    assert studio.ollama.pull_count(NEW) == 1


async def _installed(studio, model: str) -> bool:
    return (await studio.model(model))["install"]["state"] == "installed"


async def _drained(studio) -> bool:
    return await studio.idle("install__install_model")
