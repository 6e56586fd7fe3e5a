"""Dead letters: listed from the stream, redriven (one or all) after a fix, each redrive an operator event."""

from __future__ import annotations

from functions import load
from studio.runtime.settings import Secret
from tests.sample.handler import function as sample
from tests.support import Recorder, eventually

OPERATOR = {"Authorization": "Bearer op"}


async def start(embedded_studio, settings, bus):
    seen = Recorder()
    await bus.listen("event.dead_lettered", seen)
    await bus.listen("operator.*", seen)
    client = await embedded_studio(
        [load("monitor"), sample], settings_override=settings.replace(admin_token=Secret("op"))
    )
    return client, seen


async def poison(client, seen, n: int) -> dict:
    assert (await client.post("/api/sample/notes", json={"n": n, "note": "poison pill"})).status == 201

    def letters_seen() -> int:
        return sum(
            1 for e in seen.items if e.type == "event.dead_lettered" and e.data["event_type"] == "sample.recorded"
        )

    await eventually(lambda: letters_seen() >= n, message=f"note {n} dead-lettered")
    letters = (await (await client.get("/api/monitor/dead-letters", headers=OPERATOR)).json())["dead_letters"]
    return letters[0]


async def seen_notes() -> set[int]:
    return {r["n"] for r in await sample.db.fetch_all("SELECT n FROM sample_seen")}


async def test_a_dead_letter_is_listed_and_redriven_after_the_fix(embedded_studio, settings, bus) -> None:
    client, seen = await start(embedded_studio, settings, bus)
    letter = await poison(client, seen, 1)
    assert (letter["event_type"], letter["consumer"], letter["redriven_at"]) == (
        "sample.recorded",
        "sample__remember_note",
        None,
    )
    assert "poison" in letter["error"] and letter["reason"]

    await sample.db.execute("INSERT INTO sample_cures (n) VALUES (1)")  # the fix
    resp = await client.post(f"/api/monitor/dead-letters/{letter['event_id']}/redrive", headers=OPERATOR)

    assert resp.status == 200 and (await resp.json())["redriven"] == [letter["event_id"]]
    await eventually(lambda: seen_notes(), message="the redriven note handled")
    assert await seen_notes() == {1}
    redriven = [e for e in seen.items if e.type == "operator.dead_letter_redriven"]
    assert redriven and redriven[0].data["operator"] == "admin token"
    again = (await (await client.get("/api/monitor/dead-letters", headers=OPERATOR)).json())["dead_letters"]
    assert again[0]["event_id"] == letter["event_id"] and again[0]["redriven_at"]


async def test_redrive_all_and_the_refusals(embedded_studio, settings, bus) -> None:
    client, seen = await start(embedded_studio, settings, bus)
    await poison(client, seen, 1)
    await poison(client, seen, 2)
    await sample.db.execute("INSERT INTO sample_cures (n) VALUES (1), (2)")

    unknown = await client.post("/api/monitor/dead-letters/evt_nope/redrive", headers=OPERATOR)
    visitor = await client.post("/api/monitor/dead-letters/redrive")
    everything = await client.post("/api/monitor/dead-letters/redrive", headers=OPERATOR)

    assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "unknown_dead_letter"
    assert visitor.status in (401, 403)
    assert everything.status == 200 and len((await everything.json())["redriven"]) == 2
    await eventually(lambda: seen_notes_are(1, 2), message="both redriven notes handled")
    second = await client.post("/api/monitor/dead-letters/redrive", headers=OPERATOR)
    assert (await second.json())["redriven"] == [], "a redriven dead letter is not redriven twice"


async def seen_notes_are(*ns: int) -> bool:
    return await seen_notes() == set(ns)
