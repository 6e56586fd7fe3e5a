"""The host nginx config (compose/nginx) in a real nginx, with a test certificate and the real gateway
behind it, and the frontend container's nginx config in front of the site: HTTPS, HTTP -> HTTPS,
the seed's rate limits answered with 429, security headers on every status, server-sent events
unbuffered, and Stripe's webhook getting through while the API is flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import ssl
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import stripe

from functions import load
from gateway.edge import CSP, HSTS
from studio.runtime.settings import Secret
from tests.conftest import free_port
from tests.production import nginx
from tests.sample.handler import function as sample

WEBHOOK_SECRET = "whsec_test_nginx"
SECURITY = {
    "Strict-Transport-Security": HSTS,
    "Content-Security-Policy": CSP,  # the same policy as the gateway's own
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@pytest.fixture
async def site(tmp_path: Path, embedded_studio, settings):
    """The gateway (embedded, real functions), the frontend's nginx, the host nginx in front."""
    client = await embedded_studio(
        [load("purchase"), load("install"), load("webhook"), load("health"), sample],
        settings_override=settings.replace(
            skip_payment=True,
            stripe_webhook_secret=Secret(WEBHOOK_SECRET),
            admin_token=Secret("op-token"),
            functions=("purchase", "install", "webhook"),
        ),
    )
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "index.html").write_text("<!doctype html><title>Local AI Studio</title><h1>Local AI Studio</h1>")
    (pages / "marketplace.html").write_text("<!doctype html><title>Marketplace</title>")
    frontend = nginx.start_frontend(tmp_path / "frontend", gateway_port=client.server.port, site_root=pages)
    host = nginx.start_host(tmp_path / "host", frontend_port=frontend.ports["http"], gateway_port=client.server.port)
    host.frontend = frontend
    host.db = settings.database_path
    try:
        yield host
    finally:
        host.stop()
        frontend.stop()


def tls_context(host: nginx.Nginx) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(host.prefix / "letsencrypt" / "live" / "localhost" / "fullchain.pem"))


def session(host: nginx.Nginx) -> aiohttp.ClientSession:
    """One visitor: keeps the studio's cookie (set for 127.0.0.1, hence `unsafe`)."""
    connector = aiohttp.TCPConnector(ssl=tls_context(host), limit=200, force_close=True)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


def assert_security_headers(resp: aiohttp.ClientResponse, what: str) -> None:
    for name, value in SECURITY.items():
        assert resp.headers.getall(name, []) == [value], (what, resp.status, name, resp.headers.getall(name, []))


async def burst(s: aiohttp.ClientSession, method: str, url: str, n: int, **kwargs) -> list[aiohttp.ClientResponse]:
    async def one() -> aiohttp.ClientResponse:
        async with s.request(method, url, **kwargs) as resp:
            await resp.read()
            return resp

    return await asyncio.gather(*(one() for _ in range(n)))


async def timed_burst(s: aiohttp.ClientSession, url: str, n: int) -> tuple[Counter[int], float]:
    """The statuses of `n` concurrent GETs and how long they took (the bucket refills meanwhile)."""
    started = time.monotonic()
    responses = await burst(s, "GET", url, n)
    return Counter(r.status for r in responses), time.monotonic() - started


def refills(rate: int, seconds: float) -> int:
    """Requests a `rate`/s bucket may let through in `seconds` beyond its burst (one more in flight)."""
    return int(rate * seconds) + 1


async def test_https_answers_with_the_security_headers_on_every_status(site) -> None:
    async with session(site) as s:
        async with s.get(site.url("https", "/api/sample/hello")) as resp:
            assert resp.headers["X-Request-Id"]  # the gateway answered, through TLS
            assert resp.cookies["studio_visitor"]["secure"]  # it knows the visitor came over HTTPS
        seen = set()
        for path, status in [
            ("/", 200),
            ("/marketplace", 200),
            ("/api/sample/hello", 200),
            ("/api/models", 200),
            ("/no-such-page", 404),
            ("/api/no-such-thing", 404),
            ("/metrics", 401),
        ]:
            async with s.get(site.url("https", path)) as resp:
                assert resp.status == status, (path, await resp.text())
                assert_security_headers(resp, path)
                seen.add(status)
        async with s.post(site.url("https", "/api/models/install"), data=b"x" * (2 << 20)) as resp:
            assert resp.status == 413  # nginx's own answer: bigger than any route accepts
            assert_security_headers(resp, "413")
        limited = [r for r in await burst(s, "GET", site.url("https", "/api/sample/hello"), 60) if r.status == 429]
        assert limited
        assert_security_headers(limited[0], "429")
        assert seen == {200, 401, 404}


async def test_an_upstream_that_is_down_is_a_502_with_the_headers(tmp_path: Path) -> None:
    down = nginx.start_host(tmp_path / "host", frontend_port=free_port(), gateway_port=free_port())
    try:
        async with session(down) as s:
            for path in ("/", "/api/models", "/health"):
                async with s.get(down.url("https", path)) as resp:
                    assert resp.status == 502, path
                    assert_security_headers(resp, f"502 {path}")
    finally:
        down.stop()


async def test_plain_http_redirects_to_https_but_serves_acme_challenges(site) -> None:
    token = site.prefix / "acme" / ".well-known" / "acme-challenge" / "tok3n"
    token.write_text("tok3n.thumbprint")
    async with aiohttp.ClientSession() as s:
        async with s.get(site.url("http", "/marketplace?from=ad"), allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "https://127.0.0.1/marketplace?from=ad"
            assert resp.headers["X-Frame-Options"] == "DENY"
        async with s.get(site.url("http", "/.well-known/acme-challenge/tok3n")) as resp:
            assert resp.status == 200 and await resp.text() == "tok3n.thumbprint"
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(site.url("https", "/"))  # the test CA is needed: TLS is real


async def test_the_api_is_limited_to_10_per_second_with_a_burst_then_429(site) -> None:
    async with session(site) as s:
        statuses, took = await timed_burst(s, site.url("https", "/api/sample/hello"), 60)
        assert statuses[429] >= 30 and 21 <= statuses[200] <= 21 + refills(10, took), (statuses, took)  # 1 + burst 20

        async def recovered() -> bool:
            async with s.get(site.url("https", "/api/sample/hello")) as resp:
                return resp.status == 200

        started = time.monotonic()
        while not await recovered():
            assert time.monotonic() - started < 3, "the API limit did not let requests through again"
            await asyncio.sleep(0.05)  # the bucket refills at 10 r/s: poll for it


async def test_pages_are_limited_to_30_per_second_with_a_burst_then_429(site) -> None:
    async with session(site) as s:
        statuses, took = await timed_burst(s, site.url("https", "/"), 120)
    assert statuses[429] >= 50 and 51 <= statuses[200] <= 51 + refills(30, took), (statuses, took)  # 1 + burst 50


def signed_stripe_event(n: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "id": f"evt_nginx_{n}",
            "object": "event",
            "type": "customer.created",
            "livemode": False,
            "created": int(time.time()),
            "data": {"object": {"id": f"cus_{n}", "object": "customer"}},
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
    return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


async def test_stripe_webhooks_get_through_while_the_api_is_flooded(site) -> None:
    async with session(site) as s:

        async def post_webhook(n: int) -> int:
            body, headers = signed_stripe_event(n)
            async with s.post(site.url("https", "/api/webhooks/stripe"), data=body, headers=headers) as resp:
                return resp.status

        flood = asyncio.gather(*(burst(s, "GET", site.url("https", "/api/sample/hello"), 50) for _ in range(4)))
        hooks = await asyncio.gather(*(post_webhook(n) for n in range(40)))
        api = [r.status for batch in await flood for r in batch]

    assert Counter(api)[429] >= 150, Counter(api)
    assert hooks == [200] * 40
    conn = sqlite3.connect(site.db)
    try:
        assert conn.execute("SELECT count(*) FROM stripe_events WHERE event_id LIKE 'evt_nginx_%'").fetchone() == (40,)
    finally:
        conn.close()


async def read_until(stream: aiohttp.StreamReader, marker: bytes, timeout: float) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await asyncio.wait_for(stream.readany(), timeout)
        assert chunk, f"the stream ended before {marker!r}"
        seen += chunk
    return seen


async def test_server_sent_events_arrive_as_they_are_sent(site) -> None:
    async with session(site) as s:
        # A stream of 4 events 0.5 s apart: the first must not wait for the rest.
        asked = time.monotonic()
        async with s.get(site.url("https", "/api/sample/sse?n=4&delay=0.5")) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            await read_until(resp.content, b"data: tick 0", timeout=2)
            first = time.monotonic() - asked
            assert first < 0.4, f"the first event came after {first:.2f} s: the stream was held back"
            assert_security_headers(resp, "sse")

        # The live event stream: its state at once, then a purchase as it happens.
        async with s.get(site.url("https", "/api/events")) as events:
            await read_until(events.content, b"event: state", timeout=3)
            async with s.post(site.url("https", "/api/models/purchase/llama3.2:1b")) as bought:
                assert bought.status == 200
                bought_at = time.monotonic()
            seen = await read_until(events.content, b"purchase.completed", timeout=5)
            assert time.monotonic() - bought_at < 2
            assert b"llama3.2:1b" in seen


async def test_the_frontend_container_serves_pages_and_passes_the_api_to_the_gateway(site) -> None:
    frontend = site.frontend
    (frontend.prefix.parent / "pages" / "app.css").write_text("h1 { color: teal }")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(frontend.url("http", "/")) as resp:
            assert resp.status == 200 and "Local AI Studio" in await resp.text()
            assert resp.headers["Cache-Control"] == "no-cache"  # pages are revalidated
            assert resp.headers["X-Frame-Options"] == "DENY"
        async with s.get(frontend.url("http", "/marketplace")) as resp:
            assert resp.status == 200 and "Marketplace" in await resp.text()
        async with s.get(frontend.url("http", "/app.css")) as resp:
            assert resp.headers["Cache-Control"] == "public, max-age=300"
        async with s.get(frontend.url("http", "/api/sample/hello"), headers={"X-Forwarded-Proto": "https"}) as resp:
            assert resp.status == 200 and resp.headers["X-Request-Id"]
            assert resp.cookies["studio_visitor"]["secure"]  # the host nginx's scheme is passed on
        async with s.get(frontend.url("http", "/health")) as resp:
            assert resp.status in (200, 503) and "components" in await resp.json()
        async with s.get(frontend.url("http", "/healthz")) as resp:
            assert resp.status == 200


def other_address(host: nginx.Nginx) -> aiohttp.ClientSession:
    """Another client: over IPv6 loopback, a different address to nginx (the test certificate names
    127.0.0.1 and localhost, so the name is not checked here; the certificate still is)."""
    context = tls_context(host)
    context.check_hostname = False
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, force_close=True))


async def test_one_address_holds_at_most_20_streams_and_everyone_else_is_served(site) -> None:
    async with session(site) as s, contextlib.AsyncExitStack() as held:
        for n in range(20):
            events = await held.enter_async_context(s.get(site.url("https", "/api/events")))
            assert events.status == 200, n
            await read_until(events.content, b"event: state", timeout=3)
        async with s.get(site.url("https", "/api/events")) as refused:
            assert refused.status == 429
            assert "X-Request-Id" not in refused.headers  # nginx's own answer, not the gateway's
            assert_security_headers(refused, "429 streams")
        assert 'limiting connections by zone "localai_streams"' in (site.prefix / "error.log").read_text()

        async with other_address(site) as other:
            ipv6 = f"https://[::1]:{site.ports['https']}"
            async with other.get(ipv6 + "/api/events") as theirs:
                assert theirs.status == 200
                await read_until(theirs.content, b"event: state", timeout=3)
            async with other.get(ipv6 + "/health") as health:
                assert health.status in (200, 503) and "components" in await health.json()
            async with other.get(ipv6 + "/") as page:
                assert page.status == 200


def test_the_shipped_main_config_sizes_connections_and_open_files() -> None:
    text = nginx.HOST_MAIN_CONF.read_text()
    connections_line = re.search(r"worker_connections (\d+);", text)
    files_line = re.search(r"worker_rlimit_nofile (\d+);", text)
    assert connections_line and files_line
    connections, files = int(connections_line.group(1)), int(files_line.group(1))
    assert connections >= 4096 and files >= 2 * connections + 1024  # two per proxied request, and spare
    site_conf = nginx.render_host_config(
        DOMAIN="x",
        FRONTEND_PORT="1",
        GATEWAY_PORT="2",
        LISTEN_HTTP="80",
        LISTEN6_HTTP="[::]:80",
        LISTEN_HTTPS="443",
        LISTEN6_HTTPS="[::]:443",
        CERT_DIR="/c",
        ACME_ROOT="/a",
    )
    for location in ("location = /api/events {", "location /api/chat {"):
        block = site_conf[site_conf.index(location) : site_conf.index("}", site_conf.index(location))]
        assert "limit_conn localai_streams 20;" in block and "limit_conn localai_conn 100;" in block, location
