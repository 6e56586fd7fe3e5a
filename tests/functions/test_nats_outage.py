"""NATS gone under a running studio (every function, the embedded gateway; the real nats-server killed):
every route is answered, and where an answer needs NATS it is a 503 that says so with Retry-After, never
a 500 or a traceback; the outage is counted once and cleared when NATS is back."""

from __future__ import annotations

import asyncio
import logging
import re

import functions
from events.server import NatsServer
from studio.runtime.settings import Secret, Settings
from studio.runtime.shortages import SHORTAGES
from tests.support import eventually

OPERATOR = {"Authorization": "Bearer op-nats"}
PLACEHOLDER = re.compile(r"\{[^}]+\}")


async def test_every_route_answers_with_nats_down_and_none_with_a_500(
    embedded_studio, settings: Settings, nats_server: NatsServer, caplog
) -> None:
    fns = [functions.load(name) for name in functions.NAMES]
    studio = settings.replace(admin_token=Secret("op-nats"), skip_payment=True)
    client = await embedded_studio(fns, settings_override=studio)
    assert (await client.get("/api/models")).status == 200  # the visitor's cookie, with NATS up
    # (a model the catalog does not hold: the operator's DELETE /api/catalog/{model} must not take a real one
    # off sale for the other tests of this process, which share the catalog)
    routes = sorted(
        {(spec.method, PLACEHOLDER.sub("not-for-sale:latest", spec.path)) for f in fns for spec in f.routes}
    )
    caplog.set_level(logging.WARNING)
    caplog.clear()

    nats_server.kill()
    await eventually(lambda: not client.host_runtime.bus.connected, message="the studio to see NATS gone")
    answers: dict[tuple[str, str], tuple[int, str, str | None]] = {}
    for method, path in routes:
        for headers in ({}, OPERATOR):
            try:
                resp = await asyncio.wait_for(client.request(method, path, json={}, headers=headers), 15)
            except TimeoutError:
                answers[(method, path)] = (0, "no answer in 15 s", None)
                continue
            code = ""
            if resp.status >= 400 and resp.content_type == "application/json":
                code = str((await resp.json()).get("error", {}).get("code", ""))
            answers[(method, path + (" (operator)" if headers else ""))] = (
                resp.status,
                code,
                resp.headers.get("Retry-After"),
            )
            resp.close()  # (a live stream is not read)

    broken = {where: a for where, a in answers.items() if a[0] == 0 or (a[0] >= 500 and a[0] != 503)}
    assert not broken, broken
    outages = {where: a for where, a in answers.items() if a[0] == 503 and a[1].endswith("unavailable")}
    assert any(a[1] == "bus_unavailable" for a in outages.values()), answers  # (some route needs NATS itself)
    unexplained = {where: a for where, a in outages.items() if not a[2]}
    assert not unexplained, f"outage 503s without Retry-After: {unexplained}"
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info and r.name.startswith(("studio", "gateway"))]
    assert not tracebacks, tracebacks

    restarted = NatsServer(nats_server.store_dir, port=nats_server.port)
    await restarted.start()
    try:
        await eventually(lambda: client.host_runtime.bus.connected, timeout=20, message="NATS back")
        await eventually(lambda: "bus_unavailable" not in SHORTAGES.active(), timeout=20, message="the outage cleared")
    finally:
        restarted.stop()
