"""The operator changes the catalog (price, featured, description; adds and removes models): stored,
published as operator.catalog_changed, sold at once, and still there after a restart."""

from __future__ import annotations

import shutil

import pytest

from studio import catalog
from tests.functions.pipeline import OPERATOR, start_studio
from tests.support import Recorder

NEW_MODEL = {
    "id": "smollm2:135m",
    "name": "SmolLM2 135M",
    "family": "llama",
    "parameter_size": "135M",
    "description": "A tiny model for quick tests.",
    "download_bytes": 270_898_672,
    "ram_bytes": 1_073_741_824,
    "license": "Apache 2.0",
    "price_cents": 0,
    "currency": "usd",
}


@pytest.fixture
def catalog_path(tmp_path):
    path = tmp_path / "catalog.json"  # its own path: its own catalog object, whatever other tests changed
    shutil.copy(catalog.DEFAULT_PATH, path)
    return path


@pytest.fixture
async def store(embedded_studio, settings, ollama, stripe_api, bus, catalog_path):
    ollama.add_model("smollm2:135m", 27_000)  # in Ollama's library (the double's registry), not in the catalog
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, catalog_path=catalog_path, ollama_library_url=ollama.url
    )
    studio.operator_events = Recorder()
    await bus.listen("operator.*", studio.operator_events)
    return studio


async def price_of(studio, model_id: str) -> int | None:
    models = (await (await studio.client.get("/api/models")).json())["models"]
    return next((m["price_cents"] for m in models if m["id"] == model_id), None)


async def test_a_price_change_is_sold_at_once(store) -> None:
    resp = await store.client.patch(
        "/api/catalog/llama3.2:1b", json={"price_cents": 249, "featured": True}, headers=OPERATOR
    )

    assert resp.status == 200 and (await resp.json())["price_cents"] == 249
    assert await price_of(store, "llama3.2:1b") == 249
    checkout = await (await store.client.post("/api/models/purchase/llama3.2:1b")).json()
    assert checkout["status"] == "checkout"
    assert store.stripe.create_requests[0]["line_items"][0]["price_data"]["unit_amount"] == "249"
    event = store.operator_events.items[0]
    assert event.type == "operator.catalog_changed" and event.data["operator"] == "admin token"
    assert (event.data["change"], event.data["entry"]["price_cents"]) == ("updated", 249)


async def test_bad_changes_are_4xx_and_change_nothing(store) -> None:
    cases = [
        ("PATCH", "/api/catalog/llama3.2:1b", {"price_cents": 10}, OPERATOR, 400, "invalid_catalog_entry"),
        ("PATCH", "/api/catalog/llama3.2:1b", {"name": "x"}, OPERATOR, 400, "invalid_catalog_change"),
        ("PATCH", "/api/catalog/nope:1b", {"price_cents": 100}, OPERATOR, 404, "unknown_model"),
        ("POST", "/api/catalog", {**NEW_MODEL, "id": "registry.example.com/evil:1b"}, OPERATOR, 400, None),
        ("POST", "/api/catalog", {**NEW_MODEL, "id": "phi3:mini"}, OPERATOR, 409, "already_in_catalog"),
        ("POST", "/api/catalog", {**NEW_MODEL, "id": "no-such-model:7b"}, OPERATOR, 400, "not_in_library"),
        ("DELETE", "/api/catalog/nope:1b", None, OPERATOR, 404, "unknown_model"),
    ]
    for method, path, body, headers, status, code in cases:
        resp = await store.client.request(method, path, json=body, headers=headers)
        answer = await resp.json()
        assert resp.status == status, (method, path, answer)
        if code:
            assert answer["error"]["code"] == code
    visitor = await store.client.patch("/api/catalog/llama3.2:1b", json={"price_cents": 100})
    assert visitor.status in (401, 403)
    assert await price_of(store, "llama3.2:1b") == 199
    assert store.operator_events.items == []


async def test_models_are_added_and_removed_and_the_changes_survive_a_restart(
    embedded_studio, settings, ollama, stripe_api, bus, store, catalog_path
) -> None:
    added = await store.client.post("/api/catalog", json=NEW_MODEL, headers=OPERATOR)
    removed = await store.client.delete("/api/catalog/codellama:7b", headers=OPERATOR)
    await store.client.patch("/api/catalog/phi3:mini", json={"description": "Small and sharp."}, headers=OPERATOR)

    assert added.status == 201 and removed.status == 200
    assert await price_of(store, "smollm2:135m") == 0
    assert await price_of(store, "codellama:7b") is None
    gone = await store.client.post("/api/models/purchase/codellama:7b")
    assert gone.status == 404

    catalog.cached.cache_clear()  # a new process: only the file, until the stored changes are applied
    again = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, catalog_path=catalog_path, ollama_library_url=""
    )
    models = {m["id"]: m for m in (await (await again.client.get("/api/models")).json())["models"]}
    assert "smollm2:135m" in models and "codellama:7b" not in models
    assert models["phi3:mini"]["description"] == "Small and sharp."
