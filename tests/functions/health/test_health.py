"""/health: one report per component, 200 only when every component is fine; the details (paths,
URLs, function names) only for the operator."""

from __future__ import annotations

import pytest

from functions import load
from studio.runtime.settings import Secret
from tests.doubles.ollama import OllamaDouble
from tests.support import eventually


@pytest.fixture
async def ollama():
    async with OllamaDouble() as double:
        yield double


OPERATOR = {"Authorization": "Bearer op-token"}


async def report(client, headers=OPERATOR) -> tuple[int, dict]:
    resp = await client.get("/health", headers=headers)
    return resp.status, await resp.json()


async def test_healthy_studio_answers_200_with_every_component(embedded_studio, settings, ollama) -> None:
    s = settings.replace(admin_token=Secret("op-token"), ollama_url=ollama.url, functions=("health", "monitor"))
    client = await embedded_studio([load("health"), load("monitor")], settings_override=s)

    status, body = await report(client)

    assert status == 200, body
    components = body["components"]
    assert {k: v["status"] for k, v in components.items()} == {
        "nats": "ok",
        "consumers": "ok",
        "database": "ok",
        "ollama": "ok",
        "disk": "ok",
        "functions": "ok",
    }
    assert components["ollama"]["version"] == "0.33.0"
    assert components["database"]["integrity"] == "ok"
    assert components["functions"]["functions"]["monitor"]["instances"] == 1


async def test_a_function_without_heartbeats_is_named(embedded_studio, settings, ollama) -> None:
    s = settings.replace(admin_token=Secret("op-token"), ollama_url=ollama.url, functions=("health", "monitor"))
    client = await embedded_studio([load("health")], settings_override=s)  # monitor is not running

    status, body = await report(client)

    assert status == 503
    assert body["failing"] == ["functions"]
    assert "monitor" in body["components"]["functions"]["message"]


async def test_ollama_outage_is_reported_with_its_url_and_recovery_is_seen(embedded_studio, settings, ollama) -> None:
    s = settings.replace(admin_token=Secret("op-token"), ollama_url=ollama.url, functions=("health",))
    client = await embedded_studio([load("health")], settings_override=s)
    assert (await report(client))[0] == 200

    async with ollama.down():
        status, body = await report(client)
        assert status == 503 and body["failing"] == ["ollama"]
        assert f"unreachable at {ollama.url}" in body["components"]["ollama"]["message"]

    await eventually(lambda: _status_is(client, 200), message="healthy again")


async def test_low_disk_fails_with_what_to_do(embedded_studio, settings, ollama) -> None:
    s = settings.replace(
        admin_token=Secret("op-token"), ollama_url=ollama.url, functions=("health",), disk_min_free_mb=10**9
    )
    client = await embedded_studio([load("health")], settings_override=s)

    status, body = await report(client)

    assert status == 503 and body["failing"] == ["disk"]
    assert "STUDIO_DATA_DIR" in body["components"]["disk"]["message"]


async def _status_is(client, status: int) -> bool:
    return (await report(client))[0] == status


async def test_anyone_sees_the_status_and_what_fails_but_no_details(embedded_studio, settings, ollama) -> None:
    s = settings.replace(admin_token=Secret("op-token"), ollama_url=ollama.url, functions=("health", "monitor"))
    client = await embedded_studio([load("health")], settings_override=s)  # monitor is not running

    async with ollama.down():
        status, body = await report(client, headers={})
        operator = (await report(client))[1]

    assert status == 503
    assert body["failing"] == ["functions", "ollama"]
    assert body["components"]["ollama"] == {"status": "fail"}
    assert set(body) == {"status", "failing", "checked_at", "components"}
    text = str(body)
    for secret in (ollama.url, str(s.database_path), str(s.data_dir), s.nats_url, "monitor", "instances"):
        assert secret not in text, secret
    assert ollama.url in operator["components"]["ollama"]["message"]
