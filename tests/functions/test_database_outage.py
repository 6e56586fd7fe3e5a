"""PostgreSQL stopped under a running studio (purchase and chat, a real server halted and started again
via tests/postgres.py): every request is answered (503 database_unavailable with Retry-After where it
needs the database, never a 500 or a traceback), chat keeps answering a paid model its visitor was
seen owning, the outage is alerted once and cleared, and the pool comes back without a restart."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from events.bus import Bus
from events.catalog import ResourceExhausted, ResourceRecovered
from functions import load
from studio.runtime.dialect import DatabaseUrl
from studio.runtime.settings import Secret, Settings
from studio.runtime.shortages import SHORTAGES
from tests.doubles.ollama import OllamaDouble
from tests.functions.chat.conftest import FREE, OPERATOR_TOKEN, PAID, Studio, chat
from tests.postgres import PostgresServer, postgres_bin
from tests.support import Recorder, eventually

pytestmark = pytest.mark.postgres
purchase = load("purchase")


@pytest.fixture
async def ollama_double() -> AsyncIterator[OllamaDouble]:
    async with OllamaDouble(installed=[FREE, PAID]) as d:
        yield d


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own: it is stopped mid-test, which the shared one must never be."""
    bin_dir = postgres_bin()
    assert bin_dir is not None, "PostgreSQL is not installed: apt-get install postgresql (tests/run does)"
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()


async def _status(client, path: str, **kw) -> int:
    resp = await client.request(kw.pop("method", "GET"), path, **kw)
    await resp.read()
    return resp.status


async def test_postgres_stopped_answers_503_with_retry_after_alerts_once_and_recovers_without_restart(
    own_postgres: PostgresServer, ollama_double: OllamaDouble, settings: Settings, embedded_studio, bus: Bus, caplog
) -> None:
    settings = settings.replace(
        database_url=DatabaseUrl.parse(own_postgres.new_database()),
        ollama_url=ollama_double.url,
        admin_token=Secret(OPERATOR_TOKEN),
        skip_payment=True,
        functions=("purchase", "chat"),
    )
    client = await embedded_studio([purchase, chat], settings_override=settings)
    studio = Studio(client, settings, bus, "embedded")
    known, unknown = studio.visitor(), studio.visitor()
    for visitor in (known, unknown):
        resp = await client.post(f"/api/models/purchase/{PAID}", headers=visitor.headers)
        assert resp.status == 200, await resp.text()
    assert (await known.chat(model=PAID, message="Hello")).status == 200  # chat sees it owned, and remembers
    shortages = Recorder()
    await bus.listen(ResourceExhausted.TYPE, shortages)
    await bus.listen(ResourceRecovered.TYPE, shortages)
    await bus.flush()
    caplog.set_level(logging.INFO)
    caplog.clear()

    own_postgres.halt()
    try:
        for _ in range(5):  # every request needing the database: a 503 that says so, with Retry-After
            for method, path in (("GET", "/api/models"), ("POST", f"/api/models/purchase/{FREE}")):
                resp = await client.request(method, path, headers=unknown.headers)
                body = await resp.json()
                assert resp.status == 503, (method, path, body)
                assert body["error"]["code"] == "database_unavailable" and int(resp.headers["Retry-After"]) > 0
            answered = await known.chat(model=PAID, message="Still there?")
            assert answered.status == 200, await answered.text()  # owned, as chat last knew it
            assert (await unknown.chat(model=FREE, message="Hi")).status == 200  # free: no database needed
            refused = await unknown.chat(model=PAID, message="Hi")
            assert refused.status == 503 and (await refused.json())["error"]["code"] == "database_unavailable"
        alerted = await eventually(
            lambda: [e for e in shortages.items if e.type == ResourceExhausted.TYPE], message="the outage alerted"
        )
        assert {e.data["kind"] for e in alerted} == {"database_unavailable"}
    finally:
        own_postgres.resume()

    await eventually(
        lambda: _is(_status(client, "/api/models", headers=unknown.headers), 200),
        timeout=20,
        message="the pool to reconnect by itself",
    )
    await eventually(
        lambda: [e for e in shortages.items if e.type == ResourceRecovered.TYPE], message="the outage cleared"
    )
    assert "database_unavailable" not in SHORTAGES.active()
    assert (await unknown.chat(model=PAID, message="Back?")).status == 200
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and getattr(errors[0], "shortage", None) == "database_unavailable", [
        r.getMessage() for r in errors
    ]


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected
