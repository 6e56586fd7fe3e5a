"""Chat across a fleet of Ollama nodes (two stand-ins over real HTTP): the node holding the model in memory
first, then the fewest answers in flight; a node failing before the first token is skipped for the other,
not after; a node down is named by /health; a model's cloud fallback answers only when every node is
saturated."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from functions import load
from functions.chat.handler import FLEET
from studio import catalog
from studio.runtime.settings import Secret
from tests.doubles.cloud import DEFAULT_REPLY, CloudDouble
from tests.doubles.ollama import OllamaDouble
from tests.functions.chat.conftest import FREE, OPERATOR_TOKEN, read_events
from tests.support import eventually

chat = load("chat")
health = load("health")
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@pytest.fixture
async def two():
    async with OllamaDouble(installed=[FREE]) as a, OllamaDouble(installed=[FREE]) as b:
        yield a, b


@pytest.fixture
def fleet_settings(chat_settings, two):
    a, b = two
    return chat_settings.replace(ollama_urls=(a.url, b.url), functions=("chat", "health"))


async def fleet_studio(settings, bus, embedded_studio, *more):
    from tests.functions.chat.conftest import Studio

    client = await embedded_studio([chat, health, *more], settings_override=settings)
    studio = Studio(client, settings, bus, "embedded")
    await bus.listen("chat.*", lambda event: studio.events(event))
    await chat[FLEET].refresh()  # what the background refresh knows after its first round
    return studio


async def ask(visitor, model: str = FREE) -> tuple[int, dict]:
    resp = await visitor.chat(model=model, message="hello", stream=False)
    return resp.status, await resp.json()


async def load_model(double: OllamaDouble, model: str = FREE) -> None:
    """Chat once straight at a stand-in: it holds the model in memory afterwards (/api/ps)."""
    import aiohttp

    async with aiohttp.ClientSession() as s:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
        async with s.post(double.url + "/api/chat", json=body) as resp:
            assert resp.status == 200


async def test_a_node_down_leaves_chat_to_the_other_and_health_names_it(
    fleet_settings, two, bus, embedded_studio
) -> None:
    a, b = two
    studio = await fleet_studio(fleet_settings, bus, embedded_studio)
    visitor = studio.visitor()
    await b.go_down()

    answers = [await ask(visitor) for _ in range(4)]

    assert [status for status, _ in answers] == [200] * 4
    assert len(a.chat_requests) == 4 and b.chat_requests == []
    resp = await studio.client.get("/health", headers=OPERATOR)
    report = await resp.json()
    ollama = report["components"]["ollama"]
    assert resp.status == 200 and ollama["status"] == "warn"  # degraded, still serving
    assert b.url in ollama["message"] and a.url not in ollama["message"]
    assert ollama["nodes"][b.url]["status"] == "down" and ollama["nodes"][a.url]["status"] == "up"
    assert ollama["nodes"][a.url]["models"] == [FREE] and ollama["nodes"][a.url]["in_flight"] == 0
    public = await (await studio.client.get("/health")).json()
    assert public["components"]["ollama"] == {"status": "warn"}  # no URLs for visitors

    await a.go_down()
    resp = await studio.client.get("/health", headers=OPERATOR)
    assert resp.status == 503 and (await resp.json())["failing"] == ["ollama"]
    status, body = await ask(visitor)
    assert status == 503 and body["error"]["code"] == "ollama_unavailable"


async def test_a_node_failing_before_the_first_token_is_skipped_for_the_other(
    fleet_settings, two, bus, embedded_studio
) -> None:
    a, b = two
    studio = await fleet_studio(fleet_settings, bus, embedded_studio)
    visitor = studio.visitor()
    a.fail_next_chats(n=None)  # a 500 before any byte, every time

    status, body = await ask(visitor)
    assert status == 200 and body["response"]
    assert len(a.chat_requests) == 1 and len(b.chat_requests) == 1  # a was tried first (config order), then b
    done = await eventually(lambda: [e for e in visitor.events() if e.type == "chat.completed"], message="usage")
    assert done[0].data["node"] == b.url and done[0].data["fallback"] is False

    b.busy_next_chats(n=1)  # a fails, b is busy (503): both tried, the last one's error is the answer
    status, body = await ask(visitor)
    assert (status, body["error"]["code"]) in ((502, "ollama_error"), (503, "ollama_busy"))
    assert len(a.chat_requests) == 2 and len(b.chat_requests) == 2


async def test_after_the_first_token_an_answer_stays_on_its_node(fleet_settings, two, bus, embedded_studio) -> None:
    a, b = two
    studio = await fleet_studio(fleet_settings, bus, embedded_studio)
    visitor = studio.visitor()
    a.fail_next_chats(n=1, after_tokens=2)

    resp = await visitor.chat(model=FREE, message="hello", stream=True)
    events = await read_events(resp)

    assert [name for name, _ in events][:2] == ["token", "token"] and events[-1][0] == "error"
    assert len(a.chat_requests) == 1 and b.chat_requests == []  # no retry once text was sent


async def test_the_node_holding_the_model_in_memory_is_preferred_then_the_least_busy(
    fleet_settings, two, bus, embedded_studio
) -> None:
    a, b = two
    await load_model(b)  # only b holds it in memory
    studio = await fleet_studio(fleet_settings, bus, embedded_studio)
    visitor = studio.visitor()
    for double in (a, b):
        double.chat_requests.clear()

    assert [status for status, _ in [await ask(visitor) for _ in range(3)]] == [200] * 3
    assert a.chat_requests == [] and len(b.chat_requests) == 3

    await load_model(a)  # both hold it now: answers in flight decide
    await chat[FLEET].refresh()
    for double in (a, b):
        double.chat_requests.clear()
        double.tokens_per_s = 20  # slow enough that every answer is still running when the next starts
    streams = [await studio.visitor().chat(model=FREE, message="hello", stream=True) for _ in range(4)]
    await eventually(lambda: len(a.chat_requests) + len(b.chat_requests) == 4, message="4 answers started")
    assert len(a.chat_requests) == 2 and len(b.chat_requests) == 2
    for double in (a, b):
        double.tokens_per_s = 0  # seen how they split: the rest of every answer at once
    for resp in streams:
        assert (await read_events(resp))[-1][0] == "done"


@pytest.fixture
async def cloud():
    async with CloudDouble(api_key="sk-cloud") as c:
        yield c


@pytest.fixture
def hybrid_catalog(tmp_path: Path, cloud: CloudDouble) -> Path:
    entries = [m.to_dict() for m in catalog.load()]
    for entry in entries:
        entry.pop("free")
        entry["capabilities"] = list(entry["capabilities"])
        if entry["id"] == FREE:
            entry["fallback"] = {"base_url": cloud.url, "model": "gpt-4o-mini"}
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": entries}))
    return path


async def test_the_cloud_fallback_answers_only_when_every_node_is_saturated(
    fleet_settings, two, bus, embedded_studio, cloud, hybrid_catalog
) -> None:
    a, b = two
    s = fleet_settings.replace(
        catalog_path=hybrid_catalog,
        ollama_queue_max=1,
        fallback_api_key=Secret("sk-cloud"),
        functions=("chat", "health", "monitor"),
    )
    studio = await fleet_studio(s, bus, embedded_studio, load("monitor"))
    visitor = studio.visitor()
    for double in (a, b):
        double.tokens_per_s = 10

    first = await studio.visitor().chat(model=FREE, message="hello", stream=True)
    assert (await read_events(first, limit=1))[0][0] == "token"  # one node holds one answer: not saturated
    second = await studio.visitor().chat(model=FREE, message="hello", stream=True)
    assert (await read_events(second, limit=1))[0][0] == "token"
    assert cloud.requests == [] and len(a.chat_requests) == 1 and len(b.chat_requests) == 1

    status, body = await ask(visitor)  # both nodes hold queue_max answers: the cloud answers

    assert status == 200 and body["response"] == DEFAULT_REPLY
    assert len(cloud.requests) == 1 and cloud.authorizations == ["Bearer sk-cloud"]
    assert cloud.requests[0]["model"] == "gpt-4o-mini" and cloud.requests[0]["messages"][-1]["content"] == "hello"
    usage = await eventually(
        lambda: [e for e in visitor.events() if e.type == "chat.completed" and e.data["fallback"]], message="usage"
    )
    assert usage[0].data["node"] == "fallback" and usage[0].data["completion_tokens"] == len(DEFAULT_REPLY.split())
    for double in (a, b):
        double.tokens_per_s = 0  # the saturated nodes' answers: the rest at once
    for resp in (first, second):
        assert (await read_events(resp))[-1][0] == "done"
    report = await (await studio.client.get("/health", headers=OPERATOR)).json()
    assert report["components"]["ollama"]["fallback_answers"] == 1
    metric = ("studio_chat_fallback_answers_total", (("model", FREE),))
    await eventually(lambda: _metric(studio, metric), message="the fallback counted in /metrics")
    stats = await (await studio.client.get("/api/monitor/stats", headers=OPERATOR)).json()
    assert stats["chat"][FREE]["fallback"] == 1

    status, body = await ask(visitor)  # nothing in flight any more: local again
    assert status == 200 and body["response"] != DEFAULT_REPLY and len(cloud.requests) == 1


async def test_without_a_fallback_a_saturated_fleet_still_answers_locally(
    fleet_settings, two, bus, embedded_studio
) -> None:
    a, b = two
    studio = await fleet_studio(fleet_settings.replace(ollama_queue_max=1), bus, embedded_studio)
    visitor = studio.visitor()
    for double in (a, b):
        double.tokens_per_s = 10
    streams = [await studio.visitor().chat(model=FREE, message="hello", stream=True) for _ in range(2)]
    for resp in streams:
        await read_events(resp, limit=1)

    answer = asyncio.create_task(ask(visitor))
    await eventually(lambda: len(a.chat_requests) + len(b.chat_requests) == 3, message="a node asked a third time")
    for double in (a, b):
        double.tokens_per_s = 0  # the third answer is with a node: every answer's rest at once
    status, _ = await answer

    assert status == 200 and len(a.chat_requests) + len(b.chat_requests) == 3
    await asyncio.gather(*(read_events(resp) for resp in streams))


async def _metric(studio, key) -> bool:
    from tests.functions.chat.test_usage_metrics import samples

    return samples(await (await studio.client.get("/metrics", headers=OPERATOR)).text()).get(key) == 1


async def test_a_cloud_fallback_that_fails_leaves_the_answer_to_the_nodes(
    fleet_settings, two, bus, embedded_studio, cloud, hybrid_catalog
) -> None:
    a, b = two
    s = fleet_settings.replace(catalog_path=hybrid_catalog, ollama_queue_max=1, fallback_api_key=Secret("sk-wrong"))
    studio = await fleet_studio(s, bus, embedded_studio)
    for double in (a, b):
        double.tokens_per_s = 10
    streams = [await studio.visitor().chat(model=FREE, message="hello", stream=True) for _ in range(2)]
    for resp in streams:
        await read_events(resp, limit=1)

    answer = asyncio.create_task(ask(studio.visitor()))
    await eventually(lambda: len(a.chat_requests) + len(b.chat_requests) == 3, message="a node asked a third time")
    for double in (a, b):
        double.tokens_per_s = 0  # the third answer is with a node: every answer's rest at once
    status, body = await answer

    assert len(cloud.requests) == 1  # asked, refused (401: a wrong key)
    assert status == 200 and body["response"] != DEFAULT_REPLY
    assert len(a.chat_requests) + len(b.chat_requests) == 3
    for resp in streams:
        assert (await read_events(resp))[-1][0] == "done"
