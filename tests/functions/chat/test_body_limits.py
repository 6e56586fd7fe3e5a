"""Chat's request bodies (issue 21, item 10): each route's limit follows what its request can carry, and the
bodies held at once are bounded, both decided before a byte of the body is read."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.app import BODY_BUDGET
from tests.doubles.ollama import OllamaDouble
from tests.functions.chat.conftest import FREE, PAID, Studio
from tests.support import eventually

VISION = "llava:7b"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
TEXT_ONLY = ["/v1/completions", "/v1/embeddings"]


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, VISION, "nomic-embed-text:latest"]) as d:
        yield d


async def send_head(studio: Studio, path: str, length: int, headers: dict[str, str], body: bytes = b"") -> Any:
    """A connection that sent a request's head (its Content-Length) and `body`, the start of the body at most."""
    server = studio.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = f"POST {path} HTTP/1.1\r\nHost: studio\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    return reader, writer


async def answer_to_head(studio: Studio, path: str, length: int, headers: dict[str, str]) -> tuple[int, dict, Any]:
    """The answer to a request of which only the head was sent: one at all means the body was never awaited."""
    reader, writer = await send_head(studio, path, length, headers)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # the head only: no body is coming
        lines = head.decode().split("\r\n")
        fields = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
        body = await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), 10)
        return int(lines[0].split()[1]), fields, json.loads(body)
    finally:
        writer.close()


@pytest.mark.parametrize("path", TEXT_ONLY)
async def test_a_text_only_route_refuses_a_declared_length_past_its_text_limit_before_the_body(
    studio: Studio, double: OllamaDouble, path: str
) -> None:
    limit = studio.settings.chat_max_text_body_bytes
    assert limit < studio.settings.chat_max_body_bytes // 20, "text is a megabyte or two, not the images' 58"

    status, headers, error = await answer_to_head(studio, path, limit + 1, studio.visitor().headers)

    assert status == 413 and headers["content-type"].startswith("application/json")
    assert error["error"]["code"] == "payload_too_large" and str(limit) in error["error"]["message"]
    assert error["error"]["type"] == "invalid_request_error", "in OpenAI's shape, as the route's other errors"
    assert double.chat_requests == []


async def chunks_of(raw: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for at in range(0, len(raw), size):
        yield raw[at : at + size]


async def test_a_chunked_body_past_a_text_routes_limit_is_cut(studio: Studio, double: OllamaDouble) -> None:
    limit = studio.settings.chat_max_text_body_bytes
    raw = json.dumps({"model": FREE, "prompt": "x" * limit}).encode()  # no Content-Length: it is counted

    resp = await studio.client.post(
        "/v1/completions",
        data=chunks_of(raw),
        headers={**studio.visitor().headers, "Content-Type": "application/json"},
    )
    error = (await resp.json())["error"]

    assert "Content-Length" not in resp.request_info.headers
    assert resp.status == 413 and error["code"] == "payload_too_large", error
    assert double.chat_requests == []


async def test_an_image_route_takes_images_the_text_routes_would_refuse(studio: Studio, double: OllamaDouble) -> None:
    picture = "data:image/png;base64," + base64.b64encode(PNG + bytes(700_000)).decode()  # ~930 KB each
    parts = [{"type": "text", "text": "What are these?"}] + [{"type": "image_url", "image_url": {"url": picture}}] * 3
    images = json.dumps({"model": VISION, "messages": [{"role": "user", "content": parts}]}).encode()
    headers = {**studio.visitor(admin=True).headers, "Content-Type": "application/json"}
    assert studio.settings.chat_max_text_body_bytes < len(images) < studio.settings.chat_max_body_bytes

    seen = await studio.client.post("/v1/chat/completions", data=images, headers=headers)
    text = json.dumps({"model": FREE, "prompt": "x" * (len(images) - 40)}).encode()  # as many bytes, as text
    refused = await studio.client.post("/v1/completions", data=text, headers=headers)

    assert seen.status == 200, await seen.text()
    assert len(double.chat_requests[-1]["messages"][0]["images"]) == 3
    assert refused.status == 413 and (await refused.json())["error"]["code"] == "payload_too_large"


async def test_bodies_past_the_budget_in_flight_wait_with_retry_after_and_a_hang_up_frees_its_share(
    make_studio, double: OllamaDouble, mode: str
) -> None:
    studio = await make_studio(mode, body_bytes_in_flight=1_000_000)
    budget = studio.client.app[BODY_BUDGET]
    visitor = studio.visitor()
    size = 800_000  # under every chat limit; two of them are past the budget

    _, first = await send_head(studio, "/api/chat", size, visitor.headers, b'{"model": ')  # its body trickles
    await eventually(lambda: budget.held == size, message="the first body to take its share")
    chat, chat_headers, chat_error = await answer_to_head(studio, "/api/chat", size, visitor.headers)
    anthropic, anthropic_headers, anthropic_error = await answer_to_head(studio, "/v1/messages", size, visitor.headers)

    assert chat == 503 and chat_error["error"]["code"] == "request_bodies_full" and chat_headers["retry-after"] == "5"
    assert anthropic == 529 and anthropic_headers["retry-after"] == "5", "Anthropic's overloaded: its clients retry"
    assert anthropic_error["type"] == "error" and anthropic_error["error"]["type"] == "overloaded_error"
    assert budget.held == size, "a refused body takes nothing"
    small = await visitor.chat(model=FREE, message="Hi")  # a form, a short chat: never locked out by big bodies
    assert small.status == 200, await small.text()

    first.close()  # the first client hangs up mid-body
    await eventually(lambda: budget.held == 0, message="the hang-up to give its share back")
    padded = b'{"model": "' + FREE.encode() + b'", "message": "Hi"' + b" " * size + b"}"
    resp = await visitor.post(padded)

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["response"]
    assert budget.held == 0


@pytest.fixture(params=["embedded", "distributed"])
def mode(request) -> str:
    return request.param
