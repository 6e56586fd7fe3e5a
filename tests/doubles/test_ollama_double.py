"""The Ollama double against docs/ollama-api.md, over real HTTP: plain aiohttp and ollama-python."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
import ollama
import pytest

from tests.doubles.ollama import (
    BUSY_ERROR,
    DEFAULT_CHAT_ERROR,
    DEFAULT_REPLY,
    DEFAULT_THINKING,
    MANIFEST_NOT_FOUND,
    NO_EMBEDDING_ERROR,
    NO_VISION_ERROR,
    OllamaDouble,
    create_app,
    parse_name,
    tokenize,
)
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
HEX64 = re.compile(r"[0-9a-f]{64}")
CREATED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z")
LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?(Z|[+-]\d\d:\d\d)")
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
USER_HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def double():
    d = OllamaDouble()
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(double):
    async with ollama.AsyncClient(host=double.url) as c:
        yield c


def parse_ndjson(raw: bytes) -> list[dict]:
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert all(lines), "blank NDJSON line"
    return [json.loads(line) for line in lines]


async def post_lines(http, url, body) -> tuple[aiohttp.ClientResponse, list[dict]]:
    async with http.post(url, json=body) as resp:
        raw = await resp.read()
    if resp.status == 200 and resp.content_type == "application/x-ndjson":
        return resp, parse_ndjson(raw)
    return resp, [json.loads(raw)]


# -- transport ---------------------------------------------------------------------------------------------


async def test_root_version_and_content_types(double, http):
    async with http.get(double.url + "/") as r:
        assert (r.status, await r.text(), r.headers["Content-Type"]) == (
            200,
            "Ollama is running",
            "text/plain; charset=utf-8",
        )
    async with http.head(double.url + "/") as r:
        assert r.status == 200
    async with http.get(double.url + "/api/version") as r:
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        assert re.fullmatch(r"\d+\.\d+\.\d+", (await r.json())["version"])


async def test_unknown_path_and_wrong_method_are_gin_text_pages(double, http):
    async with http.get(double.url + "/api/nope") as r:
        assert (r.status, r.headers["Content-Type"], await r.text()) == (404, "text/plain", "404 page not found")
    async with http.post(double.url + "/api/tags") as r:
        assert (r.status, r.headers["Content-Type"], await r.text()) == (405, "text/plain", "405 method not allowed")
    async with http.get(double.url + "/api/chat") as r:
        assert r.status == 405


async def test_bodies_are_bound_like_gin(double, http):
    double.preinstall("tinyllama")

    async def err(path, data, method="POST"):
        async with http.request(method, double.url + path, data=data) as r:
            return r.status, (await r.json())["error"]

    assert await err("/api/chat", b"") == (400, "missing request body")
    assert await err("/api/delete", b"  ", "DELETE") == (400, "missing request body")
    assert await err("/api/chat", b'{"model":') == (400, "unexpected EOF")
    assert (await err("/api/pull", b"{x}"))[0] == 400
    assert await err("/api/chat", b"[1]") == (400, "json: cannot unmarshal array into Go value of type api.ChatRequest")
    assert await err("/api/chat", b'{"model":5}') == (
        400,
        "json: cannot unmarshal number into Go struct field ChatRequest.model of type string",
    )
    # any Content-Type, unknown fields ignored, only the first JSON value is read
    async with http.post(
        double.url + "/api/chat",
        headers={"Content-Type": "text/plain"},
        data=b'{"model":"tinyllama","messages":[],"x":1} trailing',
    ) as r:
        assert r.status == 200 and (await r.json())["done_reason"] == "load"


async def test_host_guard_when_bound_to_loopback(double, http):
    async with http.get(double.url + "/api/tags", headers={"Host": "evil.example"}) as r:
        assert r.status == 403 and await r.read() == b""
    for host in ("localhost:11434", "studio.localhost", "ollama.internal", "10.1.2.3", "[::1]:1"):
        async with http.get(double.url + "/", headers={"Host": host}) as r:
            assert r.status == 200, host


async def test_works_under_the_aiohttp_client_fixture(aiohttp_client):
    client = await aiohttp_client(create_app(OllamaDouble(installed=["gemma2:2b"])))
    r = await client.get("/api/tags")
    assert [m["name"] for m in (await r.json())["models"]] == ["gemma2:2b"]


# -- names --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "display"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("  TinyLlama ", "TinyLlama:latest"),
        ("qwen2.5:0.5b", "qwen2.5:0.5b"),
        ("library/qwen2.5:0.5b", "qwen2.5:0.5b"),
        ("registry.ollama.ai/library/phi3:mini", "phi3:mini"),
        ("https://registry.ollama.ai/library/phi3:mini", "phi3:mini"),
        ("someone/model", "someone/model:latest"),
        ("10.0.0.5:6379/a/b", "10.0.0.5:6379/a/b:latest"),
    ],
)
def test_parse_name_valid(raw, display):
    assert parse_name(raw).display == display


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "a b",
        "m:",
        ":t",
        "ns/",
        "/m",
        "a@sha256:1",
        "evil.com/x",
        "host:5000/x",
        "a/b/c/d",
        "-x",
        "x" * 81,
        "m:t:u",
    ],
)
def test_parse_name_invalid(raw):
    assert parse_name(raw) is None


def test_tokenize_joins_back():
    for text in (DEFAULT_REPLY, "<script>alert(1)</script>", "  a\n\nb  ", "héllo, wörld!", ""):
        assert "".join(tokenize(text)) == text
    assert tokenize("<b>hi</b>")[:3] == ["<", "b", ">"]


# -- tags / show / delete / copy / ps ---------------------------------------------------------------------------


async def test_tags_shape_and_order(double, http):
    async with http.get(double.url + "/api/tags") as r:
        assert await r.json() == {"models": []}
    double.preinstall("tinyllama", "qwen2.5:0.5b")
    async with http.get(double.url + "/api/tags") as r:
        models = (await r.json())["models"]
    assert [m["name"] for m in models] == ["qwen2.5:0.5b", "tinyllama:latest"]  # newest first
    qwen = models[0]
    assert list(qwen) == ["name", "model", "modified_at", "size", "digest", "details"]
    assert qwen["name"] == qwen["model"]
    assert HEX64.fullmatch(qwen["digest"]) and not qwen["digest"].startswith("sha256:")
    assert LOCAL_TIME.fullmatch(qwen["modified_at"])
    assert qwen["size"] == double.registry["qwen2.5:0.5b"].size > 0
    assert qwen["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "qwen2",
        "families": ["qwen2"],
        "parameter_size": "494.03M",
        "quantization_level": "Q4_K_M",
    }


async def test_show(double, http):
    double.preinstall("llama3.2")
    async with http.post(double.url + "/api/show", json={"model": "LLAMA3.2"}) as r:
        body = await r.json()
    assert r.status == 200
    assert body["model_info"]["general.architecture"] == "llama"
    assert "tools" in body["capabilities"] and body["details"]["family"] == "llama"
    assert {"modelfile", "parameters", "template", "modified_at"} <= set(body)
    async with http.post(double.url + "/api/show", json={"name": "llama3.2"}) as r:  # legacy field
        assert r.status == 200
    async with http.post(double.url + "/api/show", json={"model": "Mistral"}) as r:
        assert (r.status, await r.json()) == (404, {"error": "model 'Mistral:latest' not found"})


async def test_delete(double, http):
    double.preinstall("tinyllama")
    async with http.delete(double.url + "/api/delete", json={"model": "TinyLlama"}) as r:
        assert r.status == 200 and await r.read() == b""
    assert not double.is_installed("tinyllama") and not double.blobs
    async with http.delete(double.url + "/api/delete", json={"name": "TinyLlama"}) as r:
        assert (r.status, await r.json()) == (404, {"error": "model 'TinyLlama' not found"})
    async with http.delete(double.url + "/api/delete", json={"model": "bad name"}) as r:
        assert (r.status, await r.json()) == (400, {"error": 'name "bad name" is invalid'})


async def test_copy(double, http):
    double.preinstall("tinyllama")
    async with http.post(double.url + "/api/copy", json={"source": "tinyllama", "destination": "mine"}) as r:
        assert r.status == 200 and await r.read() == b""
    assert double.installed_names() == ["mine:latest", "tinyllama:latest"]
    async with http.post(double.url + "/api/copy", json={"source": "nope", "destination": "x"}) as r:
        assert (r.status, await r.json()) == (404, {"error": 'model "nope" not found'})


async def test_ps_follows_chat_and_keep_alive(double, http):
    double.preinstall("tinyllama")
    async with http.get(double.url + "/api/ps") as r:
        assert await r.json() == {"models": []}
    await post_lines(http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
    async with http.get(double.url + "/api/ps") as r:
        (item,) = (await r.json())["models"]
    assert item["name"] == "tinyllama:latest" and item["size_vram"] == item["size"] and item["context_length"]
    assert LOCAL_TIME.fullmatch(item["expires_at"])
    _, (unload,) = await post_lines(http, double.url + "/api/generate", {"model": "tinyllama", "keep_alive": 0})
    assert unload["done_reason"] == "unload"
    async with http.get(double.url + "/api/ps") as r:
        assert await r.json() == {"models": []}


# -- pull ---------------------------------------------------------------------------------------------------


async def test_pull_streams_the_documented_sequence(double, http):
    resp, lines = await post_lines(http, double.url + "/api/pull", {"model": "tinyllama"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
    assert lines[0] == {"status": "pulling manifest"}
    assert [x["status"] for x in lines[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = double.registry["tinyllama:latest"].layers
    progress = lines[1:-3]
    assert [x["digest"] for x in progress] == [la.digest for la in layers for _ in range(2)]
    for line in progress:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", line["digest"])
        assert line["status"] == f"pulling {line['digest'][7:19]}"
        assert line.get("completed") != 0  # omitted while 0
    assert progress[0].keys() == {"status", "digest", "total"}
    assert progress[1]["completed"] == progress[1]["total"] == layers[0].size
    assert double.is_installed("tinyllama:latest") and double.pull_count("TinyLlama") == 1
    async with http.get(double.url + "/api/tags") as r:
        (model,) = (await r.json())["models"]
    assert model["name"] == "tinyllama:latest"
    assert double.streams[-1].state == "done"


async def test_pull_progress_follows_the_download_speed(double, http):
    double.add_model("small:1b", [60_000, 100])
    double.pull_speed, double.pull_interval = 1_000_000, 0.01  # 10 KB per line
    started = time.monotonic()
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "small:1b", "insecure": False})
    elapsed = time.monotonic() - started
    first = [x.get("completed", 0) for x in lines if x.get("total") == 60_000]
    assert first == [0, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000]
    assert 0.05 <= elapsed < 1.0
    assert lines[-1] == {"status": "success"}


async def test_pull_of_a_present_model_is_quick_with_one_line_per_layer(double, http):
    double.preinstall("qwen2.5:0.5b")
    double.pull_speed = 1  # would take hours if anything were downloaded
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "qwen2.5:0.5b"})
    progress = [x for x in lines if "digest" in x]
    assert len(progress) == len(double.registry["qwen2.5:0.5b"].layers)
    assert all(x["completed"] == x["total"] for x in progress)
    assert [x["status"] for x in lines if "digest" not in x] == [
        "pulling manifest",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]


async def test_repull_of_an_updated_model_removes_unused_layers(double, http):
    double.preinstall("gemma2:2b")
    old_digest = double.installed["gemma2:2b"].digest
    double.add_model("gemma2:2b", 1234, seed="v2", family="gemma2")
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "gemma2:2b"})
    assert [x["status"] for x in lines[-3:]] == ["writing manifest", "removing unused layers", "success"]
    assert double.installed["gemma2:2b"].digest != old_digest


async def test_pull_unknown_model(double, http):
    resp, lines = await post_lines(http, double.url + "/api/pull", {"model": "no-such-model"})
    assert resp.status == 200
    assert lines == [{"status": "pulling manifest"}, {"error": MANIFEST_NOT_FOUND}]
    resp, body = await post_lines(http, double.url + "/api/pull", {"model": "no-such-model", "stream": False})
    assert (resp.status, body) == (500, [{"error": MANIFEST_NOT_FOUND}])
    # a host part is not our registry: the double never connects anywhere
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "10.0.0.5:6379/a/b"})
    assert lines[-1] == {"error": MANIFEST_NOT_FOUND}


async def test_pull_stream_false_answers_once(double, http):
    resp, body = await post_lines(http, double.url + "/api/pull", {"name": "phi3:mini", "stream": False})
    assert (resp.status, body, resp.headers["Content-Type"]) == (
        200,
        [{"status": "success"}],
        "application/json; charset=utf-8",
    )
    assert double.is_installed("phi3:mini")


@pytest.mark.parametrize("name", ["evil.com/x", "host:5000/x", "bad name", "", "a@b"])
async def test_pull_invalid_name(double, http, name):
    resp, body = await post_lines(http, double.url + "/api/pull", {"model": name})
    assert (resp.status, body) == (400, [{"error": "invalid model name"}])


async def test_pull_plain_http_needs_insecure(double, http):
    resp, body = await post_lines(
        http, double.url + "/api/pull", {"model": "http://registry.ollama.ai/library/tinyllama", "insecure": False}
    )
    assert (resp.status, body) == (500, [{"error": "insecure protocol http"}])


async def test_pull_failure_mid_stream_then_resume(double, http):
    double.fail_next_pulls("tinyllama", error="max retries exceeded: read: connection reset by peer")
    resp, lines = await post_lines(http, double.url + "/api/pull", {"model": "tinyllama"})
    assert resp.status == 200
    assert lines[-1] == {"error": "max retries exceeded: read: connection reset by peer"}
    first_layer = double.registry["tinyllama:latest"].layers[0]
    assert lines[-2]["completed"] == first_layer.size // 2 < first_layer.size
    assert not double.is_installed("tinyllama") and double.partials == {first_layer.digest: first_layer.size // 2}
    assert double.streams[-1].state == "error"
    # the next pull resumes the partial blob
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "tinyllama"})
    assert lines[1]["completed"] == first_layer.size // 2
    assert lines[-1] == {"status": "success"} and double.pull_count("tinyllama") == 2


async def test_pull_failure_only_hits_the_named_model_and_stream_false_is_500(double, http):
    double.fail_next_pulls("mistral", n=2)
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "gemma2:2b"})
    assert lines[-1] == {"status": "success"}
    resp, body = await post_lines(http, double.url + "/api/pull", {"model": "mistral", "stream": False})
    assert resp.status == 500 and body[0]["error"].startswith("max retries exceeded")
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "mistral:latest"})
    assert "error" in lines[-1]
    _, lines = await post_lines(http, double.url + "/api/pull", {"model": "mistral:latest"})
    assert lines[-1] == {"status": "success"}


async def test_pull_cut_closes_the_connection(double, http):
    double.cut_next_pulls()
    seen = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(double.url + "/api/pull", json={"model": "tinyllama"}) as r:
            assert r.status == 200
            async for line in r.content:
                seen.append(json.loads(line))
    assert seen[0] == {"status": "pulling manifest"} and len(seen) >= 2
    assert all("error" not in x and x.get("status") != "success" for x in seen)
    assert not double.is_installed("tinyllama") and double.streams[-1].state == "cut"


# -- chat / generate ------------------------------------------------------------------------------------------


async def test_chat_stream_shape(double, http):
    double.preinstall("tinyllama")
    resp, lines = await post_lines(http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
    *chunks, last = lines
    for chunk in chunks:
        assert list(chunk) == ["model", "created_at", "message", "done"]
        assert chunk["model"] == "tinyllama" and chunk["done"] is False
        assert chunk["message"]["role"] == "assistant" and CREATED_AT.fullmatch(chunk["created_at"])
    assert "".join(c["message"]["content"] for c in chunks) == DEFAULT_REPLY
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["message"] == {"role": "assistant", "content": ""} and "context" not in last
    for key in METRICS:
        assert isinstance(last[key], int) and last[key] > 0, key
    assert last["eval_count"] == len(chunks)
    assert double.chat_requests == [{"model": "tinyllama", "messages": USER_HI}]
    assert double.streams[-1].state == "done" and double.streams[-1].tokens_sent == len(chunks)


async def test_num_parallel_queues_the_answers_beyond_it(double, http):
    double.preinstall("tinyllama")
    double.num_parallel, double.tokens_per_s = 1, 200  # OLLAMA_NUM_PARALLEL=1: one answer at a time

    async def ask() -> list[dict]:
        _, lines = await post_lines(http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
        return lines

    answers = await asyncio.gather(ask(), ask())

    assert all(lines[-1]["done"] for lines in answers)
    first, second = sorted(double.streams, key=lambda r: r.started)
    assert second.first_token_at is not None and first.last_token_at is not None
    assert second.first_token_at >= first.last_token_at  # the second waited for the first to finish


async def test_chat_escapes_html_like_go_and_takes_a_reply_callable(double, http):
    double.preinstall("tinyllama")
    double.reply = lambda body: "<script>alert(1)</script> & " + body["messages"][-1]["content"]
    async with http.post(double.url + "/api/chat", json={"model": "tinyllama", "messages": USER_HI}) as r:
        raw = await r.read()
    assert b"<" not in raw and b">" not in raw and b"&" not in raw
    assert b'"content":"\\u003c"' in raw and b"\\u0026" in raw
    text = "".join(x["message"]["content"] for x in parse_ndjson(raw))
    assert text == "<script>alert(1)</script> & hi"


async def test_chat_stream_false_and_num_predict(double, http):
    double.preinstall("tinyllama")
    double.reply = "one two three four five"
    resp, (body,) = await post_lines(
        http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI, "stream": False}
    )
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert body["message"] == {"role": "assistant", "content": "one two three four five"}
    assert body["done"] is True and body["done_reason"] == "stop" and body["eval_count"] == 5
    _, (body,) = await post_lines(
        http,
        double.url + "/api/chat",
        {"model": "tinyllama", "messages": USER_HI, "stream": False, "options": {"num_predict": 2}},
    )
    assert body["message"]["content"] == "one two" and body["done_reason"] == "length" and body["eval_count"] == 2
    _, lines = await post_lines(
        http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI, "options": {"num_predict": 3}}
    )
    assert len(lines) == 4 and lines[-1]["done_reason"] == "length"


async def test_chat_and_generate_errors(double, http):
    double.preinstall("tinyllama")
    for path in ("/api/chat", "/api/generate"):
        resp, body = await post_lines(http, double.url + path, {"model": "Mistral", "messages": USER_HI, "prompt": "x"})
        assert (resp.status, body) == (404, [{"error": "model 'Mistral' not found"}])
        resp, body = await post_lines(http, double.url + path, {"messages": USER_HI})
        assert (resp.status, body) == (400, [{"error": "model is required"}])
    resp, body = await post_lines(
        http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI, "think": True}
    )
    assert (resp.status, body) == (400, [{"error": '"tinyllama" does not support thinking'}])
    resp, body = await post_lines(
        http, double.url + "/api/generate", {"model": "tinyllama", "prompt": "x", "keep_alive": "-1"}
    )
    assert (resp.status, body) == (400, [{"error": 'time: missing unit in duration "-1"'}])


async def test_busy_answers_503_before_any_byte(double, http):
    double.preinstall("tinyllama")
    double.busy_next_chats(n=2)
    for path in ("/api/chat", "/api/generate"):
        resp, body = await post_lines(
            http, double.url + path, {"model": "tinyllama", "messages": USER_HI, "prompt": "x"}
        )
        assert (resp.status, body) == (503, [{"error": BUSY_ERROR}])
    resp, _ = await post_lines(http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
    assert resp.status == 200


async def test_chat_error_mid_stream_and_before_first_byte(double, http):
    double.preinstall("tinyllama")
    double.fail_next_chats(after_tokens=3)
    resp, lines = await post_lines(http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
    assert resp.status == 200 and len(lines) == 4
    assert lines[-1] == {"error": DEFAULT_CHAT_ERROR} and double.streams[-1].state == "error"
    double.fail_next_chats(error="boom")
    resp, body = await post_lines(http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
    assert (resp.status, body) == (500, [{"error": "boom"}])


async def test_generate(double, http):
    double.preinstall("qwen2.5:0.5b")
    double.reply = "Paris."
    resp, lines = await post_lines(
        http, double.url + "/api/generate", {"model": "qwen2.5:0.5b", "prompt": "Capital of France?"}
    )
    *chunks, last = lines
    assert [list(c) for c in chunks] == [["model", "created_at", "response", "done"]] * 2
    assert "".join(c["response"] for c in chunks) == "Paris."
    assert last["response"] == "" and last["done"] and last["done_reason"] == "stop"
    assert all(isinstance(x, int) for x in last["context"]) and last["eval_count"] == 2
    assert double.generate_requests[-1]["prompt"] == "Capital of France?"
    resp, body = await post_lines(http, double.url + "/api/generate", {"model": "qwen2.5:0.5b"})
    assert resp.content_type == "application/json" and body[0]["done_reason"] == "load"
    assert body[0]["response"] == "" and "total_duration" not in body[0]


async def test_client_disconnect_mid_stream_is_seen_and_generation_stops(double, http):
    double.preinstall("tinyllama")
    double.tokens_per_s = 200
    double.reply = "word " * 400  # two seconds of tokens
    resp = await http.post(double.url + "/api/chat", json={"model": "tinyllama", "messages": USER_HI})
    for _ in range(3):
        assert json.loads(await resp.content.readline())["done"] is False
    resp.close()  # the client stops mid-stream
    rec = await double.wait_for_disconnect(timeout=2)
    assert rec.kind == "chat" and rec.state == "disconnected" and 3 <= rec.tokens_sent < 100
    assert rec.ended is not None and not double.active_streams()


async def test_a_slow_answer_finishes_at_once_when_its_speed_is_set_to_zero_mid_way(double, http):
    double.preinstall("tinyllama")
    double.tokens_per_s = 1  # ten minutes for 600 tokens
    double.reply = "word " * 600
    resp = await http.post(double.url + "/api/chat", json={"model": "tinyllama", "messages": USER_HI})
    assert json.loads(await resp.content.readline())["done"] is False
    assert double.active_streams()[0].tokens_sent == 1

    double.tokens_per_s = 0  # the test has seen what it came for: the rest at once
    lines = [json.loads(line) for line in (await resp.read()).splitlines()]

    assert lines[-1]["done"] is True and double.streams[-1].state == "done"
    assert double.streams[-1].tokens_sent == 1 + len(lines[:-1]) >= 600  # every token, the first one read above


async def test_client_leaving_a_pull_is_seen_and_the_partial_kept(double, http):
    double.add_model("big:1b", [1_000_000, 100])
    double.pull_speed, double.pull_interval = 100_000, 0.01  # ten seconds for the first layer
    resp = await http.post(double.url + "/api/pull", json={"model": "big:1b"})
    for _ in range(3):
        await resp.content.readline()
    resp.close()
    rec = await double.wait_for_disconnect(timeout=2, kind="pull")
    assert rec.model == "big:1b" and not double.is_installed("big:1b")
    assert 0 < double.partials[double.registry["big:1b"].layers[0].digest] < 1_000_000


async def test_load_delay_applies_to_a_cold_model_only(double, http):
    double.preinstall("tinyllama")
    double.load_delay = 0.05
    _, (cold,) = await post_lines(
        http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI, "stream": False}
    )
    _, (warm,) = await post_lines(
        http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI, "stream": False}
    )
    assert cold["load_duration"] >= 50_000_000 > warm["load_duration"]
    assert cold["total_duration"] >= cold["load_duration"]


async def test_ollama_client_leaving_a_stream_is_a_disconnect(double, client):
    double.preinstall("tinyllama")
    double.tokens_per_s = 200
    double.reply = "word " * 400
    async with contextlib.aclosing(await client.chat("tinyllama", USER_HI, stream=True)) as parts:
        async for part in parts:
            assert part.message.role == "assistant"
            break
    rec = await double.wait_for_disconnect(timeout=2, kind="chat")
    assert rec.tokens_sent < 100


async def test_concurrent_fast_streams_interleave(double, http):
    double.preinstall("tinyllama")
    double.reply = ["tok "] * 5000

    async def run():
        async with http.post(double.url + "/api/chat", json={"model": "tinyllama", "messages": USER_HI}) as r:
            return sum(1 for _ in (await r.read()).splitlines())

    assert await asyncio.wait_for(asyncio.gather(run(), run()), 5) == [5001, 5001]
    a, b = double.streams
    assert a.state == b.state == "done"
    # the producers yield between writes: each stream started before the other one finished
    assert b.first_token_at < a.last_token_at and a.first_token_at < b.last_token_at


async def test_fast_mode_pushes_twenty_thousand_tokens_quickly(double, http):
    double.preinstall("tinyllama")
    double.reply = ["x"] * 20_000
    started = time.monotonic()
    n = 0
    async with http.post(double.url + "/api/chat", json={"model": "tinyllama", "messages": USER_HI}) as r:
        async for _ in r.content:
            n += 1
    assert n == 20_001
    assert time.monotonic() - started < 2.0  # ~0.15 s here: far above 20,000 tokens/s


async def test_token_rate_is_respected(double, http):
    double.preinstall("tinyllama")
    double.tokens_per_s = 100
    double.reply = ["a"] * 11
    started = time.monotonic()
    _, lines = await post_lines(http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
    assert 0.09 <= time.monotonic() - started < 1.0
    assert lines[-1]["eval_duration"] >= 90_000_000


# -- down and back -------------------------------------------------------------------------------------------


async def test_go_down_and_come_back_on_the_same_port(double, http):
    double.preinstall("tinyllama")
    double.tokens_per_s = 100
    double.reply = "word " * 500
    url = double.url
    live = await http.post(url + "/api/chat", json={"model": "tinyllama", "messages": USER_HI})
    await double.wait_for_stream(tokens=1)
    await double.go_down()
    assert not double.is_up and double.streams[-1].state == "server_down"
    with pytest.raises(aiohttp.ClientError):
        await live.read()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url + "/"):
            pass
    async with ollama.AsyncClient(host=url) as c:
        with pytest.raises(ConnectionError):
            await c.list()
        with pytest.raises(httpx.ConnectError):
            async for _ in await c.pull("tinyllama", stream=True):
                pass
    await double.come_back()
    assert double.url == url
    async with http.get(url + "/api/tags") as r:
        assert r.status == 200 and len((await r.json())["models"]) == 1  # models survive a restart
    async with double.down():
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(url + "/"):
                pass
    async with http.get(url + "/") as r:
        assert r.status == 200


async def test_wait_for_times_out_with_a_message(double):
    with pytest.raises(TimeoutError, match="1 client disconnect"):
        await double.wait_for_disconnect(timeout=0.05)


# -- the official client -----------------------------------------------------------------------------------------


async def test_ollama_client_happy_path(double, client):
    assert (await client.list()).models == []
    progress = [p async for p in await client.pull("qwen2.5:0.5b", stream=True)]
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.digest and p.total for p in progress)
    (model,) = (await client.list()).models
    assert model.model == "qwen2.5:0.5b" and len(model.digest) == 64 and model.size > 0
    assert isinstance(model.modified_at, datetime) and model.details.family == "qwen2"
    shown = await client.show("qwen2.5:0.5b")
    assert shown.modelinfo["general.architecture"] == "qwen2" and "completion" in shown.capabilities
    parts = [p async for p in await client.chat("qwen2.5:0.5b", USER_HI, stream=True)]
    assert "".join(p.message.content for p in parts) == DEFAULT_REPLY
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == len(parts) - 1
    assert double.chat_requests[-1]["tools"] == [] and double.chat_requests[-1]["stream"] is True
    reply = await client.chat("qwen2.5:0.5b", USER_HI)  # the client sends stream:false
    assert reply.message.content == DEFAULT_REPLY
    gen = await client.generate("qwen2.5:0.5b", "hello")
    assert gen.response == DEFAULT_REPLY and gen.done
    assert (await client.ps()).models[0].model == "qwen2.5:0.5b"
    assert (await client.pull("qwen2.5:0.5b")).status == "success"
    assert (await client.copy("qwen2.5:0.5b", "copy")).status == "success"
    assert (await client.delete("copy")).status == "success"
    assert (await client.delete("qwen2.5:0.5b")).status == "success"
    assert (await client.list()).models == []


async def test_ollama_client_errors(double, client):
    double.preinstall("tinyllama")
    with pytest.raises(ollama.ResponseError) as e:
        await client.delete("nope")
    assert e.value.status_code == 404 and e.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as e:
        await client.show("nope")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        await client.chat("nope", USER_HI)
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        async for _ in await client.chat("nope", USER_HI, stream=True):
            pass
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        await client.pull("nope")
    assert (e.value.status_code, e.value.error) == (500, MANIFEST_NOT_FOUND)
    seen = []
    with pytest.raises(ollama.ResponseError) as e:
        async for p in await client.pull("nope", stream=True):
            seen.append(p.status)
    assert seen == ["pulling manifest"] and e.value.status_code == -1
    with pytest.raises(ollama.ResponseError) as e:
        await client.pull("evil.com/x")
    assert e.value.status_code == 400
    double.busy_next_chats()
    with pytest.raises(ollama.ResponseError) as e:
        await client.chat("tinyllama", USER_HI)
    assert (e.value.status_code, e.value.error) == (503, BUSY_ERROR)
    double.fail_next_chats(after_tokens=2)
    parts = []
    with pytest.raises(ollama.ResponseError) as e:
        async for p in await client.chat("tinyllama", USER_HI, stream=True):
            parts.append(p)
    assert len(parts) == 2 and e.value.status_code == -1 and e.value.error == DEFAULT_CHAT_ERROR
    double.cut_next_pulls("phi3:mini")
    with pytest.raises(httpx.RemoteProtocolError):
        async for _ in await client.pull("phi3:mini", stream=True):
            pass


# -- what a model can do: vision, thinking, tools, formats, embeddings (through the official client) ----------------

# a 1x1 PNG, as a picker would read it
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the city"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


async def test_show_reports_capabilities_context_and_quantization(double, client):
    double.preinstall("llava:7b", "deepseek-r1:7b", "nomic-embed-text", "llama3.2:3b")
    expected = {
        "llava:7b": (["completion", "vision"], "llama", 32768, "Q4_0"),
        "deepseek-r1:7b": (["completion", "thinking"], "qwen2", 131072, "Q4_K_M"),
        "nomic-embed-text": (["embedding"], "nomic-bert", 2048, "F16"),
        "llama3.2:3b": (["completion", "tools"], "llama", 131072, "Q4_K_M"),
    }
    for name, (caps, arch, context, quant) in expected.items():
        shown = await client.show(name)
        assert shown.capabilities == caps
        assert shown.modelinfo["general.architecture"] == arch
        assert shown.modelinfo[f"{arch}.context_length"] == context
        assert shown.details.quantization_level == quant
    assert (await client.show("llava:7b")).details.families == ["llama", "clip"]
    assert (await client.show("nomic-embed-text")).modelinfo["nomic-bert.embedding_length"] == 768


async def test_images_are_seen_by_vision_models_only(double, client, http):
    double.preinstall("llava:7b", "tinyllama")
    seeing = [{"role": "user", "content": "what is this?", "images": [PNG_1PX]}]
    reply = await client.chat("llava:7b", seeing)
    assert reply.message.content == DEFAULT_REPLY and reply.prompt_eval_count >= 768
    sent = double.chat_requests[-1]["messages"][0]["images"][0]
    assert base64.b64decode(sent) == PNG_1PX
    with pytest.raises(ollama.ResponseError) as e:
        await client.chat("tinyllama", seeing)
    assert (e.value.status_code, e.value.error) == (500, NO_VISION_ERROR)
    with pytest.raises(ollama.ResponseError) as e:
        async for _ in await client.chat("tinyllama", seeing, stream=True):
            pass
    assert e.value.status_code == 500
    resp, (body,) = await post_lines(
        http, double.url + "/api/chat", {"model": "llava:7b", "messages": [{**USER_HI[0], "images": ["not base64!"]}]}
    )
    assert resp.status == 400 and body["error"].startswith("illegal base64 data at input byte")


async def test_thinking_streams_before_the_answer_and_counts_as_tokens(double, client):
    double.preinstall("deepseek-r1:7b", "tinyllama")
    whole = await client.chat("deepseek-r1:7b", USER_HI, think=True)
    assert whole.message.thinking == DEFAULT_THINKING and whole.message.content == DEFAULT_REPLY
    assert whole.eval_count == len(tokenize(DEFAULT_THINKING)) + len(tokenize(DEFAULT_REPLY))
    parts = [p async for p in await client.chat("deepseek-r1:7b", USER_HI, think=True, stream=True)]
    kinds = ["thinking" if p.message.thinking else "content" for p in parts[:-1]]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking") and kinds[0] == "thinking"
    assert "".join(p.message.thinking or "" for p in parts) == DEFAULT_THINKING
    assert "".join(p.message.content for p in parts) == DEFAULT_REPLY
    assert all(p.message.content == "" for p in parts if p.message.thinking)
    off = await client.chat("deepseek-r1:7b", USER_HI, think=False)
    assert off.message.thinking is None and off.message.content == DEFAULT_REPLY
    unset = await client.chat("deepseek-r1:7b", USER_HI)  # the model's own tags stay in the content
    assert unset.message.content.startswith("<think>") and unset.message.content.endswith(DEFAULT_REPLY)
    with pytest.raises(ollama.ResponseError) as e:
        await client.chat("tinyllama", USER_HI, think=True)
    assert (e.value.status_code, e.value.error) == (400, '"tinyllama" does not support thinking')
    assert (await client.chat("tinyllama", USER_HI, think=False)).message.content == DEFAULT_REPLY


async def test_a_model_thinks_then_calls_a_tool_in_one_answer(double, client):
    """What Claude Code asks of a model (thinking and tools at once): qwen3 does both, as Ollama's does."""
    double.preinstall("qwen3:8b")
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    whole = await client.chat("qwen3:8b", ask, tools=[WEATHER_TOOL], think=True)
    assert whole.message.thinking == DEFAULT_THINKING and whole.message.content == ""
    assert [c.function.name for c in whole.message.tool_calls or []] == ["get_weather"]
    parts = [p async for p in await client.chat("qwen3:8b", ask, tools=[WEATHER_TOOL], think=True, stream=True)]
    kinds = ["thinking" if p.message.thinking else "calls" if p.message.tool_calls else "end" for p in parts]
    assert kinds == ["thinking"] * (len(kinds) - 2) + ["calls", "end"]


async def test_tool_calls_whole_and_streamed_then_the_tool_result_answered(double, client, http):
    double.preinstall("llama3.2:3b", "tinyllama")
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    whole = await client.chat("llama3.2:3b", ask, tools=[WEATHER_TOOL])
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather" and whole.message.content == ""
    assert call.function.arguments == {"city": "Weather in Paris?", "unit": "celsius"}
    parts = [p async for p in await client.chat("llama3.2:3b", ask, tools=[WEATHER_TOOL], stream=True)]
    with_calls = [p for p in parts if p.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done and parts[-1].done
    _, lines = await post_lines(
        http, double.url + "/api/chat", {"model": "llama3.2:3b", "messages": ask, "tools": [WEATHER_TOOL]}
    )
    raw_call = lines[0]["message"]["tool_calls"][0]
    assert raw_call["id"].startswith("call_") and raw_call["function"]["index"] == 0
    turn = [
        *ask,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18 C and sunny", "tool_name": "get_weather"},
    ]
    answer = await client.chat("llama3.2:3b", turn, tools=[WEATHER_TOOL])
    assert answer.message.content == DEFAULT_REPLY and not answer.message.tool_calls
    with pytest.raises(ollama.ResponseError) as e:
        await client.chat("tinyllama", ask, tools=[WEATHER_TOOL])
    assert (e.value.status_code, e.value.error) == (400, '"tinyllama" does not support tools')


async def test_format_json_and_schema_give_valid_json(double, client, http):
    double.preinstall("tinyllama")
    plain = await client.chat("tinyllama", USER_HI, format="json")
    assert isinstance(json.loads(plain.message.content), dict)
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer"},
            "available": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["age", "available", "tags"],
    }
    parts = [p async for p in await client.chat("tinyllama", USER_HI, format=schema, stream=True)]
    value = json.loads("".join(p.message.content for p in parts))
    assert isinstance(value["age"], int) and isinstance(value["available"], bool) and isinstance(value["tags"][0], str)
    assert len(parts) > 3  # streamed token by token, like any answer
    resp, (body,) = await post_lines(
        http, double.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI, "format": "xml"}
    )
    assert resp.status == 500 and body["error"].startswith("invalid format:")


async def test_embed_gives_one_unit_vector_per_input(double, client):
    double.preinstall("nomic-embed-text", "tinyllama")
    one = await client.embed("nomic-embed-text", "hello")
    (vector,) = one.embeddings
    assert len(vector) == 768 and abs(sum(v * v for v in vector) - 1) < 1e-4
    two = await client.embed("nomic-embed-text", ["hello", "goodbye"])
    assert len(two.embeddings) == 2 and two.embeddings[0] == vector and two.embeddings[1] != vector
    assert two.prompt_eval_count > 0 and two.total_duration > 0
    assert double.embed_requests[-1]["input"] == ["hello", "goodbye"]
    with pytest.raises(ollama.ResponseError) as e:
        await client.embed("tinyllama", "hello")
    assert (e.value.status_code, e.value.error) == (500, NO_EMBEDDING_ERROR)
    with pytest.raises(ollama.ResponseError) as e:
        await client.embed("nope", "hello")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        await client.chat("nomic-embed-text", USER_HI)
    assert (e.value.status_code, e.value.error) == (400, '"nomic-embed-text" does not support chat')


# -- control endpoints and the standalone process -------------------------------------------------------------------


async def test_control_endpoints():
    async with OllamaDouble(control=True) as d, aiohttp.ClientSession() as http:
        await http.post(d.url + "/_double/preinstall", json={"models": ["tinyllama"]})
        await http.post(d.url + "/_double/config", json={"reply": "configured", "tokens_per_s": 0})
        await http.post(d.url + "/_double/fault", json={"kind": "busy", "n": 1})
        resp, _ = await post_lines(http, d.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
        assert resp.status == 503
        _, lines = await post_lines(http, d.url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
        assert lines[0]["message"]["content"] == "configured"
        async with http.get(d.url + "/_double/state") as r:
            state = await r.json()
        assert state["installed"] == ["tinyllama:latest"] and len(state["chat_requests"]) == 2
    async with OllamaDouble() as d, aiohttp.ClientSession() as http, http.get(d.url + "/_double/state") as r:
        assert r.status == 404


async def test_standalone_process_serves_and_exits_cleanly_on_sigterm(http):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.doubles.ollama",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--pull-speed",
        "100000000",
        "--tokens-per-s",
        "0",
        "--reply",
        "from the process",
        "--preinstall",
        "tinyllama",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert f":{port}" in line.decode()
        url = f"http://127.0.0.1:{port}"
        async with http.get(url + "/api/tags", headers={"Host": "ollama:11434"}) as r:  # no guard on 0.0.0.0
            assert [m["name"] for m in (await r.json())["models"]] == ["tinyllama:latest"]
        _, lines = await post_lines(http, url + "/api/chat", {"model": "tinyllama", "messages": USER_HI})
        assert "".join(x["message"]["content"] for x in lines) == "from the process"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        rest = (await proc.stderr.read()).decode()
        assert "Traceback" not in rest and len(rest.splitlines()) <= 2
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_history_limit_keeps_the_newest_records():
    async with OllamaDouble(history_limit=10) as d, aiohttp.ClientSession() as http:
        for _ in range(25):
            async with http.get(d.url + "/api/version"):
                pass
        assert 5 <= len(d.requests) <= 10 and d.requests[-1] == ("GET", "/api/version")
