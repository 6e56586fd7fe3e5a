"""Functions running under the runtime: outbox to subscribers, correlation ids, NATS outages."""

from __future__ import annotations

from events.bus import Bus
from events.server import NatsServer
from functions import load
from studio.runtime.settings import Secret
from tests.sample.handler import function as sample
from tests.support import Recorder, SampleRecorded, eventually


async def seen_notes() -> list[int]:
    rows = await sample.db.fetch_all("SELECT n FROM sample_seen ORDER BY n")
    return [r[0] for r in rows]


async def test_committed_state_change_reaches_its_subscriber(embedded_studio) -> None:
    client = await embedded_studio([sample])

    resp = await client.post("/api/sample/notes", json={"n": 1, "note": "first"})

    assert resp.status == 201
    await eventually(lambda: seen_notes(), message="subscriber saw the note")
    assert await seen_notes() == [1]


async def test_request_id_becomes_the_correlation_id_of_caused_events(embedded_studio, bus: Bus) -> None:
    client = await embedded_studio([sample])
    seen = Recorder()
    await bus.listen(SampleRecorded.TYPE, seen)
    await bus.flush()

    resp = await client.post("/api/sample/notes", json={"n": 2}, headers={"X-Request-Id": "req-abc-123"})

    assert resp.status == 201 and resp.headers["X-Request-Id"] == "req-abc-123"
    await eventually(lambda: len(seen) == 1, message="event on the bus")
    assert seen.items[0].correlationid == "req-abc-123"


async def test_function_rides_out_a_nats_restart_and_loses_nothing(
    embedded_studio, settings, nats_server: NatsServer
) -> None:
    health = load("health")
    operator = settings.replace(admin_token=Secret("op"))  # /health's details are the operator's
    client = await embedded_studio([health, sample], settings_override=operator)
    assert (await client.post("/api/sample/notes", json={"n": 1})).status == 201
    await eventually(lambda: seen_notes(), message="first note handled")

    nats_server.kill()
    report = await eventually(lambda: _nats_status(client, "fail"), message="/health to report the outage")
    assert "unreachable" in report["components"]["nats"]["message"]
    for n in (2, 3, 4):  # accepted while NATS is down: committed with their events in the outbox
        assert (await client.post("/api/sample/notes", json={"n": n})).status == 201

    restarted = NatsServer(nats_server.store_dir, port=nats_server.port)
    await restarted.start()
    try:
        await eventually(lambda: _nats_status(client, "ok"), timeout=20, message="/health to recover")
        await eventually(lambda: _equals(seen_notes(), [1, 2, 3, 4]), timeout=20, message="every note handled")
    finally:
        restarted.stop()


async def _nats_status(client, status: str):
    resp = await client.get("/health", headers={"Authorization": "Bearer op"})
    report = await resp.json()
    return report if report["components"]["nats"]["status"] == status else None


async def _equals(coro, expected) -> bool:
    return (await coro) == expected


async def test_a_resource_that_never_closes_does_not_keep_the_process_up(settings, caplog) -> None:
    import asyncio

    from studio.runtime.function import Function
    from studio.runtime.host import Host

    stuck = Function("stuck")
    closed = asyncio.Event()

    @stuck.resource
    async def never_closes(fn: Function):
        yield
        await closed.wait()  # nothing ever sets it

    host = Host([stuck, sample], settings.replace(shutdown_grace_s=0.3))
    host.step_slack_s = 0.2
    await host.start()

    await host.stop()  # returns: the stuck step is left after its bound

    assert not closed.is_set()
    assert any("close function resources" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert host.db is None  # the steps after it still ran
