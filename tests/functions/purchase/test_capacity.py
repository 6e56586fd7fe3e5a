"""Never charge for what cannot be installed: disk and memory are checked before Checkout (and before a
free install); a disk that fills up during the pull ends the install clearly and flags the purchase."""

from __future__ import annotations

import json
from pathlib import Path

from studio import catalog
from tests.functions.pipeline import OPERATOR, start_studio

PETABYTE = 10**15


def catalog_with(tmp_path: Path, **changes: dict) -> Path:
    """The shipped catalog with some entries changed (`{"llama3.2:1b": {"download_bytes": ...}}`)."""
    doc = json.loads(catalog.DEFAULT_PATH.read_text())
    for entry in doc["models"]:
        entry.update(changes.get(entry["id"], {}))
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(doc))
    return path


async def test_a_model_too_big_for_the_disk_is_refused_before_checkout(
    embedded_studio, settings, ollama, stripe_api, bus, tmp_path
) -> None:
    path = catalog_with(
        tmp_path,
        **{"llama3.2:1b": {"download_bytes": PETABYTE}, "qwen2.5:0.5b": {"download_bytes": PETABYTE}},
    )
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, catalog_path=path, ollama_models_dir=tmp_path
    )
    before = await studio.db_counts()

    paid = await studio.client.post("/api/models/purchase/llama3.2:1b")
    free = await studio.client.post("/api/models/purchase/qwen2.5:0.5b")

    for resp in (paid, free):
        error = (await resp.json())["error"]
        assert resp.status == 507 and error["code"] == "insufficient_storage"
        assert "disk" in error["message"] and "nothing was charged" in error["message"]
    assert stripe_api.create_requests == [], "Stripe never called"
    assert await studio.db_counts() == before
    fits = await studio.client.post("/api/models/purchase/llama3.2:3b")
    assert fits.status == 200 and (await fits.json())["status"] == "checkout"


async def test_a_model_needing_more_memory_than_the_server_has_is_refused(
    embedded_studio, settings, ollama, stripe_api, bus, tmp_path
) -> None:
    path = catalog_with(tmp_path, **{"phi3:mini": {"ram_bytes": PETABYTE}})
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, catalog_path=path, server_memory_bytes=0
    )

    host = await studio.client.post("/api/models/purchase/phi3:mini")  # 0: the host's MemTotal

    assert host.status == 409 and (await host.json())["error"]["code"] == "insufficient_memory"
    assert stripe_api.create_requests == []


async def test_the_operator_can_state_the_servers_memory(embedded_studio, settings, ollama, stripe_api, bus) -> None:
    studio = await start_studio(
        embedded_studio, settings, ollama, stripe_api, bus, server_memory_bytes=2 * 1024**3, skip_payment=True
    )

    big = await studio.client.post("/api/models/purchase/llama3.2:3b")  # needs 4 GiB
    small = await studio.client.post("/api/models/purchase/llama3.2:1b")

    body = await big.json()
    assert big.status == 409 and "4.0 GB" in body["error"]["message"] and "2.0 GB" in body["error"]["message"]
    assert small.status == 200


async def test_a_disk_full_mid_pull_fails_the_install_clearly_and_flags_the_purchase(
    embedded_studio, settings, ollama, stripe_api, bus
) -> None:
    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)
    ollama.fail_next_pulls("phi3:mini", error="write /root/.ollama/models/blobs/sha256-x: no space left on device")

    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()

    failed = await studio.wait_for_event("install.failed", "phi3:mini")
    assert failed[0].data["will_retry"] is False and "disk is full" in failed[0].data["reason"]
    flagged = await studio.wait_for_event("purchase.flagged", "phi3:mini")
    assert flagged[0].data["purchase_id"] == body["purchase_id"]
    purchase = await (await studio.client.get(f"/api/purchases/{body['purchase_id']}", headers=OPERATOR)).json()
    assert "disk is full" in purchase["flag"]
    model = await studio.model("phi3:mini")
    assert model["install"]["state"] == "failed" and "disk is full" in model["install"]["reason"]
