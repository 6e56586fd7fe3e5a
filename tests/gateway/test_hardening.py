"""What a hostile visitor found (issue 13), each refused by the gateway without nginx in front:
too many streams from one address, cookie-less purchases, cross-site posts, JSON nested too deep,
a NUL byte in a path, aiohttp's own 400s, slowloris heads and bodies, Stripe re-checked per reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
import pytest

from functions import NAMES, load
from gateway.app import gateway_app
from gateway.edge import SECURITY_HEADERS
from studio.app.runner import serve
from studio.runtime.host import Host
from studio.runtime.server import function_app
from tests.conftest import free_port
from tests.sample.handler import MAX_BODY
from tests.sample.handler import function as sample
from tests.support import eventually

DEEP = b"[" * 1000 + b"]" * 1000

STUDIO_WITH_SAMPLE = [*(load(name) for name in NAMES), sample]  # the functions behind a distributed gateway


def assert_security_headers(resp) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, f"{name} missing on {resp.status}"


async def assert_error(resp, status: int, code: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"]["code"] == code
    assert_security_headers(resp)


@pytest.fixture
async def served(settings, ollama):
    """The embedded gateway (sample + purchase) served as `up` serves it: the real runner and connections
    (and an Ollama for install, whose reconciliation would otherwise warn that there is none)."""
    s = settings.replace(
        client_timeout_s=0.5, skip_payment=True, functions=("sample", "purchase", "install"), ollama_url=ollama.url
    )
    fns = [sample, load("purchase"), load("install")]
    host = Host(fns, s)
    await host.start()
    runner = await serve(gateway_app(s, functions=fns, bus=host.bus), s, "test", edge=True)
    try:
        yield s
    finally:
        await runner.cleanup()
        await host.stop()


# -- 1. streams per address ------------------------------------------------------------------------


async def test_one_address_holds_at_most_its_share_of_streams(embedded_studio, settings) -> None:
    s = settings.replace(streams_per_address=3, functions=("sample", "purchase", "install"))
    client = await embedded_studio([sample, load("purchase"), load("install")], settings_override=s)
    streams = [await client.get("/api/events") for _ in range(3)]
    assert [r.status for r in streams] == [200, 200, 200]

    refused = await client.get("/api/events")
    await assert_error(refused, 429, "too_many_streams")
    # Another client behind the trusted proxy (loopback by default) has its own share.
    other = await client.get("/api/events", headers={"X-Forwarded-For": "203.0.113.7"})
    assert other.status == 200
    other.close()
    # Ordinary requests still pass, and a closed stream frees its slot.
    assert (await client.get("/api/sample/hello")).status == 200
    streams.pop().close()
    again = await eventually(lambda: _opens(client), message="a slot to free up")
    again.close()
    for r in streams:
        r.close()


async def _opens(client):
    resp = await client.get("/api/events")
    if resp.status == 200:
        return resp
    resp.close()
    return None


async def test_forwarded_addresses_are_believed_only_from_a_trusted_proxy(embedded_studio, settings) -> None:
    s = settings.replace(streams_per_address=1, trusted_proxies=(), functions=("sample", "purchase", "install"))
    client = await embedded_studio([sample, load("purchase"), load("install")], settings_override=s)
    first = await client.get("/api/events", headers={"X-Forwarded-For": "203.0.113.1", "X-Real-IP": "203.0.113.1"})
    assert first.status == 200
    spoofed = await client.get("/api/events", headers={"X-Forwarded-For": "203.0.113.2", "X-Real-IP": "203.0.113.2"})
    await assert_error(spoofed, 429, "too_many_streams")
    first.close()


# -- 2. sessions and writes per address ------------------------------------------------------------


async def test_a_cookieless_purchase_is_refused_and_opens_no_checkout(studio) -> None:
    async with aiohttp.ClientSession() as stranger:  # no cookie jar to speak of: every request is new
        for _ in range(5):
            resp = await stranger.post(studio.url("/api/models/purchase/phi3:mini"), cookies={})
            await assert_error(resp, 401, "no_session")
            assert "Set-Cookie" not in resp.headers
            stranger.cookie_jar.clear()
        resp = await stranger.post(studio.url("/api/models/install"), json={"model": "phi3:mini"})
        await assert_error(resp, 401, "no_session")
    assert studio.stripe.create_requests == []
    assert (await studio.db_counts())["purchases"] == 0

    # A visitor who has loaded a page buys as before; the operator installs with the token alone.
    resp = await studio.client.post("/api/models/purchase/phi3:mini")
    assert resp.status == 200 and (await resp.json())["status"] == "checkout"
    assert len(studio.stripe.create_requests) == 1


async def test_state_changes_per_address_are_limited(embedded_studio, settings) -> None:
    s = settings.replace(writes_per_address_per_minute=3, functions=("sample",))
    client = await embedded_studio([sample], settings_override=s)
    statuses = [(await client.post("/api/sample/count", json={})).status for _ in range(3)]
    assert 429 not in statuses
    await assert_error(await client.post("/api/sample/count", json={}), 429, "rate_limited")
    assert (await client.get("/api/sample/hello")).status == 200  # reading is not a write


# -- 4. bad input is a 400, never a 500 ------------------------------------------------------------


async def test_json_nested_too_deep_is_a_400(studio, caplog) -> None:
    for path in ("/api/models/install",):
        resp = await studio.client.post(path, data=DEEP, headers={"Content-Type": "application/json"})
        await assert_error(resp, 400, "invalid_json")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_json_nested_too_deep_is_a_400_on_chat(embedded_studio, settings, caplog) -> None:
    client = await embedded_studio([load("chat")], settings_override=settings.replace(functions=("chat",)))
    await client.get("/")
    resp = await client.post("/api/chat", data=DEEP, headers={"Content-Type": "application/json"})
    await assert_error(resp, 400, "invalid_json")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_nul_byte_in_a_static_path_is_a_400(embedded_studio, settings) -> None:
    client = await embedded_studio([sample])
    for path in ("/%00", "/app%00.css", "/marketplace%00"):
        await assert_error(await client.get(path), 400, "invalid_path")


# -- 6. cross-site requests ------------------------------------------------------------------------


async def test_cross_site_state_changes_are_refused(studio) -> None:
    url = "/api/models/purchase/phi3:mini"
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        await assert_error(await studio.client.post(url, headers=headers), 403, "cross_site")
    assert studio.stripe.create_requests == []

    own = str(studio.client.make_url("")).rstrip("/")
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": own}, {"Origin": "https://studio.test"}, {}):
        assert (await studio.client.post(url, headers=headers)).status == 200, headers
    # Stripe's webhook has no browser origin and is signed: no origin check there.
    resp = await studio.client.post(
        "/api/webhooks/stripe", data=b"{}", headers={"Origin": "https://evil.example", "Stripe-Signature": "t=1,v1=x"}
    )
    assert resp.status == 400


# -- 7. Stripe is not asked on every reload --------------------------------------------------------


async def test_a_pending_purchase_asks_stripe_at_most_once_per_interval(studio) -> None:
    body = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    again = await (await studio.client.post("/api/models/purchase/phi3:mini")).json()
    assert again["checkout_url"] == body["checkout_url"] and len(studio.stripe.create_requests) == 1

    for _ in range(20):
        resp = await studio.client.get(f"/api/purchases/{body['purchase_id']}")
        assert resp.status == 200 and (await resp.json())["status"] == "pending"
    assert len(studio.stripe.retrieve_requests) == 1


# -- 5. and 9. the connection level: aiohttp's own 400s, slow heads and bodies ---------------------


async def raw(settings, data: bytes) -> bytes:
    """One request's answer (head and body) read off the socket as sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
    writer.write(data)
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(reader.readexactly(length), 5)
    finally:
        writer.close()


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes,code",
    [
        (b"GET /" + b"a" * 9000 + b"MARK HTTP/1.1\r\nHost: x\r\n\r\n", "request_too_large"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: MARK" + b"b" * 9000 + b"\r\n\r\n", "request_too_large"),
        (b"GE(MARK / HTTP/1.1\r\nHost: x\r\n\r\n", "bad_method"),
    ],
)
async def test_aiohttps_own_400s_are_json_with_the_headers_and_echo_nothing(
    served, caplog, request_bytes: bytes, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = parse(await raw(served, request_bytes))
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == code
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name
    assert b"MARK" not in body
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]


async def test_a_slowloris_head_is_cut_after_the_client_timeout(served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /api/sample/hello HTTP/1.1\r\nHost: x\r\n")

    sent: list[int] = []

    async def trickle() -> None:  # a slow client: one header line every 0.1 s, 10 s in all
        with contextlib.suppress(ConnectionError):
            for n in range(100):
                writer.write(f"X-Line-{n}: slow\r\n".encode())
                await writer.drain()
                sent.append(n)
                await asyncio.sleep(0.1)

    dribbling = asyncio.create_task(trickle())
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
    finally:
        dribbling.cancel()
        writer.close()
    assert len(sent) < 100, "the head was cut while it was still being trickled, not after it ended"

    # An honest client on a kept-alive connection is not cut between requests.
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.get(f"http://127.0.0.1:{served.port}/api/sample/hello") as resp:
                assert resp.status == 200


async def test_a_body_that_stalls_is_a_408(served) -> None:
    answer = await raw(
        served,
        b"POST /api/sample/count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    status, headers, body = parse(answer)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert headers["X-Frame-Options"] == "DENY"


async def test_a_declared_length_past_the_routes_limit_is_refused_before_the_body_is_sent(served) -> None:
    # Only the head is sent: an answer at all means the gateway did not wait for the body.
    head = f"POST /api/sample/count HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n"
    status, _, body = parse(await raw(served, head.encode()))

    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and str(MAX_BODY) in error["message"]


async def test_a_body_trickled_faster_than_the_read_timeout_is_cut_at_the_routes_deadline(served) -> None:
    # A byte every 0.3 s never trips the per-read timeout (0.5 s); the sample routes' deadline is 1 s.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST /api/sample/count HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    sent: list[int] = []

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for n in range(100):
                writer.write(b"x")
                await writer.drain()
                sent.append(n)
                await asyncio.sleep(0.3)

    dribbling = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        dribbling.cancel()
        writer.close()
    status, _, body = parse(answer)
    assert status == 408 and json.loads(body)["error"]["code"] == "body_timeout"
    assert "did not arrive within 1 s" in json.loads(body)["error"]["message"]
    assert len(sent) < 100, "the body was cut while it was still arriving"


async def test_a_client_that_hangs_up_mid_body_is_an_info_line_not_an_error(served, caplog) -> None:
    caplog.set_level(logging.INFO)
    _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST /api/sample/count HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    def hung_up():
        return [r for r in caplog.records if "hung up" in r.getMessage()]

    lines = await eventually(hung_up, message="the hang-up to be logged")
    assert all(r.levelno == logging.INFO for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


async def test_the_distributed_gateway_applies_the_same_guards(settings, aiohttp_client, aiohttp_server) -> None:
    function_server = await aiohttp_server(function_app(sample, settings))
    gw = settings.replace(
        upstreams={"sample": str(function_server.make_url("")).rstrip("/")}, writes_per_address_per_minute=2
    )
    client = await aiohttp_client(gateway_app(gw, behind=STUDIO_WITH_SAMPLE))
    refused = await client.post("/api/sample/count", json={}, headers={"Origin": "https://evil.example"})
    await assert_error(refused, 403, "cross_site")
    for _ in range(2):  # the refused one was not counted
        assert (
            await client.post("/api/sample/count", json={}, headers={"Sec-Fetch-Site": "same-origin"})
        ).status == 200
    await assert_error(await client.post("/api/sample/count", json={}), 429, "rate_limited")


@pytest.mark.parametrize("length", [1000, MAX_BODY], ids=["read-whole", "streamed"])
async def test_a_client_hanging_up_mid_body_behind_a_distributed_gateway_logs_no_error(
    settings, caplog, length: int
) -> None:
    # Served as `run gateway` and `run sample` serve them: the gateway cancels a handler whose client
    # left, which cuts the function's upstream request mid-body (when the body is streamed to it).
    caplog.set_level(logging.INFO)
    fn_settings = settings.replace(port=free_port())
    fn_runner = await serve(function_app(sample, fn_settings), fn_settings, "function")
    gw = settings.replace(port=free_port(), upstreams={"sample": f"http://127.0.0.1:{fn_settings.port}"})
    gw_runner = await serve(
        gateway_app(gw, behind=STUDIO_WITH_SAMPLE), gw, "gateway", cancel_on_disconnect=True, edge=True
    )
    try:
        head = f"POST /api/sample/count HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        _reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(head.encode() + b"x" * 10)
        await writer.drain()
        streamed = length > 64 * 1024  # larger bodies are streamed to the function as they arrive
        if streamed:  # hang up once the function is reading the body
            await eventually(lambda: sample.stats.inflight == 1, message="the function to start reading")
        writer.close()
        await writer.wait_closed()

        def answered():
            return [
                r for r in caplog.records if r.name == "studio.gateway.access" and "/api/sample/count" in r.getMessage()
            ]

        logged = await eventually(answered, message="the gateway's access line")
        if streamed:  # the function saw its body cut, and said so in an info line
            await eventually(
                lambda: ("POST", "/api/sample/count", 499) in sample.stats.requests, message="the function's 499"
            )
            assert [r for r in caplog.records if "hung up" in r.getMessage()]
    finally:
        await gw_runner.cleanup()
        await fn_runner.cleanup()
    assert logged[0].status == 499  # the client closed the request
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.INFO for r in caplog.records if "hung up" in r.getMessage())
