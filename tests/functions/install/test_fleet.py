"""Installing onto a fleet of Ollama nodes (two stand-ins over real HTTP): a model lands on every node (or
STUDIO_OLLAMA_COPIES of them) with progress per node; a node that joins or comes back later gets the
models it lacks; a node down is alerted, and its return too; the operator's removal covers every node."""

from __future__ import annotations

import pytest

from functions import load
from functions.install.handler import STORE
from tests.conftest import free_port
from tests.doubles.ollama import OllamaDouble
from tests.functions.pipeline import OPERATOR, start_studio
from tests.support import Recorder, eventually

MODEL = "tinyllama:latest"


@pytest.fixture
async def second():
    async with OllamaDouble(pull_speed=240_000, pull_interval=0.05) as double:
        yield double


async def buy(studio, model: str = MODEL) -> None:
    resp = await studio.client.post(f"/api/models/purchase/{model}")
    assert resp.status == 200, await resp.text()


async def node_states(model: str) -> dict[str, str]:
    rows = await load("install")[STORE].nodes()
    return {node: row.state for (m, node), row in rows.items() if m == model}


async def test_an_owned_model_lands_on_every_node_with_progress_per_node(
    embedded_studio, settings, ollama, second, stripe_api, bus
) -> None:
    nodes = (ollama.url, second.url)
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True, ollama_urls=nodes
    )

    await buy(studio)

    completed = await studio.wait_for_event("install.completed", MODEL, count=2)
    assert ollama.is_installed(MODEL) and second.is_installed(MODEL)
    assert ollama.pull_count(MODEL) == 1 and second.pull_count(MODEL) == 1
    assert sorted(e.data["node"] for e in completed) == sorted(nodes)
    assert len({e.data["install_id"] for e in completed}) == 1
    started = studio.of_type("install.started", MODEL)
    assert len(started) == 1 and sorted(started[0].data["nodes"]) == sorted(nodes)
    progressed = [e.data for e in studio.of_type("install.progressed", MODEL)]
    assert progressed and all(set(p["nodes"]) == set(nodes) for p in progressed)
    assert all(p["percent"] <= 100 and {"phase", "percent", "completed_bytes"} <= set(p) for p in progressed)
    assert await eventually(lambda: node_states(MODEL)) == dict.fromkeys(nodes, "installed")
    shown = await studio.model(MODEL)
    assert shown["install"]["state"] == "installed" and shown["owned"] is True


async def test_copies_limits_the_nodes_a_model_lands_on(
    embedded_studio, settings, ollama, second, stripe_api, bus
) -> None:
    nodes = (ollama.url, second.url)
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True, ollama_urls=nodes, ollama_copies=1
    )

    await buy(studio)

    await studio.wait_for_event("install.completed", MODEL)
    assert ollama.is_installed(MODEL) and not second.is_installed(MODEL)
    assert await node_states(MODEL) == {ollama.url: "installed"}


async def test_a_node_that_joins_later_receives_the_models_and_its_absence_is_alerted(
    embedded_studio, settings, ollama, stripe_api, bus
) -> None:
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}"
    shortages = Recorder()
    await bus.listen("resource.*", shortages)
    studio = await start_studio(
        embedded_studio,
        settings,
        ollama,
        stripe_api,
        bus,
        skip_payment=True,
        ollama_urls=(ollama.url, late_url),
        ollama_check_s=0.2,
    )
    await buy(studio)
    await studio.wait_for_event("install.completed", MODEL)
    assert ollama.is_installed(MODEL)
    down = await eventually(
        lambda: [e for e in shortages.items if e.type == "resource.exhausted"], message="the node-down alert"
    )
    assert down[0].data["kind"] == "ollama_node_down" and down[0].data["instance"] == late_url
    assert late_url in down[0].data["message"]
    assert (await studio.model(MODEL))["install"]["state"] == "installed"  # on one node: buyers can chat

    late = await OllamaDouble(pull_speed=240_000, pull_interval=0.05).start(port=late_port)
    try:
        await eventually(lambda: late.is_installed(MODEL), timeout=20, message="the model on the node that joined")
        requested = studio.of_type("install.requested", MODEL)
        assert requested and requested[0].data["reason"] == "reconcile"
        await eventually(
            lambda: [e for e in shortages.items if e.type == "resource.recovered"], message="the all-clear"
        )
        await eventually(lambda: _all_installed(MODEL, (ollama.url, late_url)), message="both nodes recorded installed")
        assert (await studio.model(MODEL))["install"]["state"] == "installed"
        assert ollama.pull_count(MODEL) == 1
    finally:
        await late.stop()


async def _all_installed(model: str, nodes: tuple[str, ...]) -> bool:
    return await node_states(model) == dict.fromkeys(nodes, "installed")


async def test_a_node_that_comes_back_gets_what_was_bought_meanwhile(
    embedded_studio, settings, ollama, second, stripe_api, bus
) -> None:
    nodes = (ollama.url, second.url)
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True, ollama_urls=nodes, ollama_check_s=0.2
    )
    async with second.down():
        await buy(studio)
        await studio.wait_for_event("install.completed", MODEL)
        assert ollama.is_installed(MODEL) and not second.is_installed(MODEL)
    await eventually(lambda: second.is_installed(MODEL), timeout=20, message="the model on the node that came back")
    await eventually(lambda: _all_installed(MODEL, nodes), message="both nodes recorded installed")


async def test_the_operators_removal_covers_every_node(
    embedded_studio, settings, ollama, second, stripe_api, bus
) -> None:
    nodes = (ollama.url, second.url)
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True, ollama_urls=nodes
    )
    await buy(studio)
    await studio.wait_for_event("install.completed", MODEL, count=2)

    removed = await studio.client.delete(f"/api/models/{MODEL}", headers=OPERATOR)

    assert removed.status == 200 and (await removed.json())["removed"] is True
    assert not ollama.is_installed(MODEL) and not second.is_installed(MODEL)
    assert await node_states(MODEL) == dict.fromkeys(nodes, "removed")
    assert (await studio.model(MODEL))["install"]["state"] == "not_installed"


async def test_a_node_that_lost_a_model_gets_it_again(
    embedded_studio, settings, ollama, second, stripe_api, bus
) -> None:
    nodes = (ollama.url, second.url)
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True, ollama_urls=nodes, ollama_check_s=0.2
    )
    await buy(studio)
    await studio.wait_for_event("install.completed", MODEL, count=2)

    second.uninstall(MODEL)  # its disk was wiped, say

    await eventually(lambda: second.pull_count(MODEL) == 2, timeout=20, message="the model pulled onto it again")
    await eventually(lambda: _all_installed(MODEL, nodes), message="both nodes recorded installed")
    assert ollama.pull_count(MODEL) == 1
    assert (await studio.model(MODEL))["install"]["state"] == "installed"


async def test_one_node_is_a_fleet_of_one(embedded_studio, settings, ollama, stripe_api, bus) -> None:
    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)
    await buy(studio)
    completed = await studio.wait_for_event("install.completed", MODEL)
    assert completed[0].data["node"] is None  # the event as before fleets
    assert all(e.data["nodes"] is None for e in studio.of_type("install.progressed", MODEL))
    assert await node_states(MODEL) == {ollama.url: "installed"}
    resp = await studio.client.delete(f"/api/models/{MODEL}", headers=OPERATOR)
    assert resp.status == 200 and await node_states(MODEL) == {ollama.url: "removed"}


async def test_the_operator_sees_each_nodes_state_and_a_visitor_not_the_servers(
    embedded_studio, settings, ollama, second, stripe_api, bus
) -> None:
    nodes = (ollama.url, second.url)
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True, ollama_urls=nodes
    )
    await buy(studio)
    await studio.wait_for_event("install.completed", MODEL, count=2)

    async def operator_view() -> dict | None:
        resp = await studio.client.get("/api/models", headers=OPERATOR)
        assert resp.status == 200
        shown = next(m for m in (await resp.json())["models"] if m["id"] == MODEL)["install"]
        return shown if shown.get("nodes") == dict.fromkeys(nodes, "installed") else None

    assert (await eventually(operator_view))["state"] == "installed"
    visitor = (await studio.model(MODEL))["install"]
    assert visitor["state"] == "installed" and "nodes" not in visitor
