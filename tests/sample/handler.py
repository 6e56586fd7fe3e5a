"""sample: a function that exists only for tests of the runtime and the gateway.

HTTP    GET  /api/sample/hello            -> {"user_id", "admin", "request_id"}
        POST /api/sample/count            -> reads the body as a stream: {"bytes", "chunks"}
        GET  /api/sample/sse?n=&delay=    -> n server-sent events, `delay` seconds apart
        GET  /api/sample/slow?seconds=    -> answers after `seconds`
        POST /api/sample/notes {"n", "note"} -> 201; the note and sample.recorded commit together
Events  consumes sample.recorded (remembers which it saw; a note starting "poison" is rejected until a
                 row in sample_cures says it is cured: a dead letter to redrive after a fix)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from aiohttp import web

from events.correlation import correlation_id
from events.delivery import Delivery, Reject
from studio.runtime.database import utcnow
from studio.runtime.function import Function
from studio.runtime.identity import identity
from tests.support import SampleRecorded

function = Function("sample", migrations=Path(__file__).parent / "migrations")
TIMEOUT_S, MAX_BODY = 1.0, 100_000  # every sample route's policy (tests rely on both)


class Note(msgspec.Struct):
    n: int
    note: str = ""


@function.route("GET", "/api/sample/hello", timeout=TIMEOUT_S, max_body=MAX_BODY)
async def say_hello(request: web.Request) -> web.Response:
    who = identity(request)
    return web.json_response({"user_id": who.user_id, "admin": who.admin, "request_id": correlation_id.get()})


@function.route("POST", "/api/sample/count", timeout=TIMEOUT_S, max_body=MAX_BODY)
async def count_body(request: web.Request) -> web.Response:
    size = chunks = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        chunks += 1
    return web.json_response({"bytes": size, "chunks": chunks})


@function.route("GET", "/api/sample/sse", timeout=TIMEOUT_S, max_body=MAX_BODY)
async def stream_events(request: web.Request) -> web.StreamResponse:
    n, delay = int(request.query.get("n", "3")), float(request.query.get("delay", "0"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for i in range(n):
        await response.write(f"id: {i}\ndata: tick {i}\n\n".encode())
        await asyncio.sleep(delay)
    await response.write(b"event: done\ndata: {}\n\n")
    return response


@function.route("GET", "/api/sample/slow", timeout=TIMEOUT_S, max_body=MAX_BODY)
async def answer_slowly(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "2")))
    return web.json_response({"slow": True})


@function.route("POST", "/api/sample/notes", body=Note, timeout=TIMEOUT_S, max_body=MAX_BODY)
async def record_note(request: web.Request, body: Note) -> web.Response:
    async with function.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO sample_notes (n, note, created_at) VALUES (?, ?, ?)", (body.n, body.note, utcnow())
        )
        await tx.publish(function.event(SampleRecorded(n=body.n, note=body.note)))
    return web.json_response({"n": body.n}, status=201)


@function.subscribe(SampleRecorded)
async def remember_note(event: SampleRecorded, delivery: Delivery) -> None:
    if event.note.startswith("poison"):
        cured = await function.db.fetch_one("SELECT 1 FROM sample_cures WHERE n = ?", (event.n,))
        if cured is None:
            raise Reject(f"note {event.n} is poison (until sample_cures has it)")
    await function.db.execute(
        "INSERT INTO sample_seen (n) VALUES (?) ON CONFLICT (n) DO UPDATE SET attempts = sample_seen.attempts + 1",
        (event.n,),
    )
