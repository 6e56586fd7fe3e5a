"""Install state has one owner: install answers it from its own record; purchase keeps no copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from events.envelope import Event
from functions import load
from studio.runtime.database import Database, Migrations
from tests.functions.pipeline import OPERATOR, start_studio
from tests.gateway.test_live import open_stream
from tests.support import eventually

SLOW = "llama3.2:3b"


@pytest.fixture
async def test_mode(embedded_studio, settings, ollama, stripe_api, bus):
    ollama.pull_speed = 20_000  # a pull of SLOW takes seconds: time to look at it mid-way
    return await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)


async def installs(bus) -> dict:
    return (await bus.query("installs.states", {}))["installs"]


async def test_install_answers_the_state_of_every_install_from_its_own_record(test_mode) -> None:
    studio = test_mode
    assert SLOW not in await installs(studio.bus), "never installed: no record"

    await studio.client.post(f"/api/models/purchase/{SLOW}")
    await studio.wait_for_event("install.progressed", SLOW)

    async def pulling():
        state = (await installs(studio.bus)).get(SLOW, {})
        return state if state.get("state") == "pulling" and state.get("percent", 0) > 0 else None

    state = await eventually(pulling, message="pulling with progress")
    assert state["install_id"].startswith("ins_") and state["total_bytes"] > 0
    assert (await studio.model(SLOW))["install"]["state"] in ("pulling", "verifying", "installed")

    studio.ollama.pull_speed = 0  # seen mid-way: the rest of the pull at once
    done = await studio.wait_for_event("install.completed", SLOW, timeout=30)
    state = (await installs(studio.bus))[SLOW]
    assert state["state"] == "installed" and state["install_id"] == done[0].data["install_id"]
    assert "percent" not in state, "progress is shown only while pulling"
    assert (await studio.model(SLOW))["install"] == state, "GET /api/models shows install's answer"


async def test_a_stream_opened_mid_install_starts_from_the_current_progress(test_mode) -> None:
    studio = test_mode
    await studio.client.post(f"/api/models/purchase/{SLOW}")
    progressed = await studio.wait_for_event("install.progressed", SLOW)

    stream = await open_stream(studio.client)
    event, state = await stream.next()

    assert event == "state"
    model = next(m for m in state["models"] if m["id"] == SLOW)
    assert model["owned"] is True
    assert model["install"]["state"] == "pulling", "the pull takes seconds: it is still running"
    assert model["install"]["percent"] >= progressed[0].data["percent"]
    assert model["install"]["install_id"] == progressed[0].data["install_id"]
    studio.ollama.pull_speed = 0  # seen mid-way: the rest of the pull at once
    await stream.until("install.completed", timeout=30)


async def test_a_state_written_just_before_the_stream_opens_is_in_its_first_message(test_mode) -> None:
    studio = test_mode
    studio.ollama.pull_speed = 0
    await studio.client.post("/api/models/purchase/tinyllama:latest")
    await studio.wait_for_event("install.completed", "tinyllama:latest")

    stream = await open_stream(studio.client)  # no delay: install's record changed with its event
    _, state = await stream.next()

    model = next(m for m in state["models"] if m["id"] == "tinyllama:latest")
    assert model["install"]["state"] == "installed"


async def test_purchase_keeps_no_copy_of_install_state(test_mode) -> None:
    purchase = load("purchase")
    assert "install_states" not in await purchase.db.tables()
    consumed = {t for spec in purchase.subscriptions for t in spec.types}
    # install.failed is consumed only to flag a paid purchase the disk cannot hold (never to keep a state)
    assert consumed & {"install.requested", "install.started", "install.completed"} == set()
    assert not any(t.startswith("install.") and t not in ("install.removed", "install.failed") for t in consumed)


async def test_the_operator_can_remove_a_model_the_moment_it_is_installed(test_mode) -> None:
    studio = test_mode
    answers: list[int] = []

    async def remove_at_once(event: Event) -> None:  # the instant install.completed is out
        if event.data["model"] == "tinyllama:latest" and not answers:
            answers.append(0)
            resp = await studio.client.delete("/api/models/tinyllama:latest", headers=OPERATOR)
            answers[0] = resp.status

    await studio.bus.listen("install.completed", remove_at_once)
    studio.ollama.pull_speed = 0
    await studio.client.post("/api/models/purchase/tinyllama:latest")

    await eventually(lambda: answers and answers[0], message="the DELETE answered")
    assert answers == [200]
    await studio.wait_for_event("install.removed", "tinyllama:latest")


async def test_removing_a_model_being_installed_is_refused(test_mode) -> None:
    studio = test_mode
    await studio.client.post(f"/api/models/purchase/{SLOW}")
    await studio.wait_for_event("install.started", SLOW)

    refused = await studio.client.delete(f"/api/models/{SLOW}", headers=OPERATOR)

    assert refused.status == 409 and (await refused.json())["error"]["code"] == "install_in_progress"
    studio.ollama.pull_speed = 0  # refused mid-way: the rest of the pull at once
    await studio.wait_for_event("install.completed", SLOW, timeout=30)
    assert (await studio.client.delete(f"/api/models/{SLOW}", headers=OPERATOR)).status == 200


async def test_an_install_request_for_a_model_being_pulled_answers_that_install(test_mode) -> None:
    studio = test_mode
    await studio.client.post(f"/api/models/purchase/{SLOW}")
    started = await studio.wait_for_event("install.started", SLOW)

    resp = await studio.client.post("/api/models/install", json={"model": SLOW}, headers=OPERATOR)

    assert resp.status == 202
    assert await resp.json() == {"install_id": started[0].data["install_id"], "model": SLOW, "status": "pulling"}
    studio.ollama.pull_speed = 0  # answered mid-way: the rest of the pull at once
    await studio.wait_for_event("install.completed", SLOW, timeout=30)
    assert studio.of_type("install.requested", SLOW) == [], "no second install was asked for"


async def test_the_catalog_is_served_while_install_is_away(embedded_studio, settings, ollama, stripe_api, bus) -> None:
    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)
    await studio.client.post("/api/models/purchase/tinyllama:latest")
    await studio.wait_for_event("install.completed", "tinyllama:latest")
    await studio.client.host_runtime.stop()  # every function of this studio is gone...
    alone = await embedded_studio([load("purchase")], settings_override=settings.replace(functions=("purchase",)))

    resp = await alone.get("/api/models")  # ...and only purchase is back

    assert resp.status == 200
    assert {m["install"]["state"] for m in (await resp.json())["models"]} == {"unknown"}
    stream = await alone.get("/api/events")
    assert stream.status == 503 and (await stream.json())["error"]["code"] == "live_unavailable"


async def test_a_visitor_install_request_needs_purchase_to_answer_for_ownership(
    embedded_studio, settings, ollama
) -> None:
    s = settings.replace(functions=("install",), ollama_url=ollama.url)
    client = await embedded_studio([load("install")], settings_override=s)
    assert (await client.get("/")).status in (200, 404)  # the visitor cookie

    resp = await client.post("/api/models/install", json={"model": "tinyllama:latest"})

    assert resp.status == 503 and resp.headers["Retry-After"] == "3"
    assert (await resp.json())["error"]["code"] == "ownership_unavailable"
    assert await installs(client.host_runtime.bus) == {}, "nothing was queued"


async def test_an_existing_database_moves_its_install_states_to_install_alone(tmp_path, db_target) -> None:
    functions_dir = Path(__file__).parents[3] / "functions"
    first = {}
    for name in ("install", "purchase"):
        first[name] = tmp_path / name
        first[name].mkdir()
        shutil.copy(next((functions_dir / name / "migrations").glob("0001_*.sql")), first[name])
    db = Database(db_target)
    await db.open()
    try:
        await db.migrate([Migrations(n, d) for n, d in first.items()])  # the studio before this change
        await db.execute(
            "INSERT INTO installs (model, state, install_id, attempt, digest, updated_at) "
            "VALUES ('tinyllama:latest', 'installed', 'ins_1', 1, 'sha256:1', '2026-01-01T00:00:00.000Z')"
        )
        now = [Migrations(n, functions_dir / n / "migrations") for n in first]

        applied = await db.migrate(now)

        assert {"install:0002_install_states", "purchase:0002_drop_install_states"} <= set(applied)
        assert "install_states" not in await db.tables()
        row = await db.fetch_one("SELECT * FROM installs WHERE model = 'tinyllama:latest'")
        assert row is not None
        assert (row["state"], row["install_id"], row["digest"], row["will_retry"]) == (
            "installed",
            "ins_1",
            "sha256:1",
            0,
        )
    finally:
        await db.close()
