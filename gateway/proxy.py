"""Distributed mode: the gateway forwards a request to its function's container over HTTP.

One shared aiohttp session with keep-alive (measured: httpx's pool collapses under concurrency).
Small bodies are read and sent whole; large or chunked ones are streamed both ways, and streamed
responses (server-sent events, chunked) are relayed chunk by chunk, unbuffered. Upstream down ->
502, no answer within the route's timeout -> 504, both as JSON errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from functions.runtime.errors import BadGateway, GatewayTimeout, PayloadTooLarge
from functions.runtime.identity import IDENTITY_HEADERS, Identity, to_headers
from functions.runtime.settings import Settings
from gateway.routes import Route

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
))
NOT_FORWARDED = HOP_BY_HOP | {h.lower() for h in (*IDENTITY_HEADERS, "Authorization", "X-Request-Id")}
WHOLE_BODY_LIMIT = 64 * 1024  # bodies up to this size are read and sent in one piece
STREAM_IDLE_S = 600.0


class Upstreams:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=10),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url_for(self, route: Route, request: web.Request) -> str:
        return self.settings.upstream_url(route.function) + request.rel_url.raw_path_qs

    async def forward(self, request: web.Request, route: Route, who: Identity,
                      request_id: str) -> web.StreamResponse:
        assert self._session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED)
        headers.update(to_headers(who))
        headers["X-Request-Id"] = request_id
        headers["X-Forwarded-For"] = request.remote or ""
        headers.setdefault("X-Forwarded-Proto", request.scheme)
        headers.setdefault("X-Forwarded-Host", request.host)

        body = LimitedBody(request, route.max_body or self.settings.max_body_bytes)
        data: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            length = request.content_length
            data = await request.read() if length is not None and length <= WHOLE_BODY_LIMIT else body.stream()
        upstream = self.url_for(route, request)
        try:
            async with asyncio.timeout(route.timeout):
                resp = await self._session.request(
                    request.method, upstream, headers=headers, data=data, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=STREAM_IDLE_S),
                )
        except TimeoutError:
            raise GatewayTimeout(f"the {route.function} function did not answer within {route.timeout:g} s",
                                 code="upstream_timeout") from None
        except aiohttp.ClientConnectorError:
            raise BadGateway(f"the {route.function} function is unreachable; is its service running?",
                             code="upstream_unreachable") from None
        except (aiohttp.ClientError, PayloadTooLarge) as exc:
            if body.exceeded:
                raise PayloadTooLarge(f"the request body is larger than {body.limit} bytes",
                                      max_bytes=body.limit) from None
            raise BadGateway(f"the {route.function} function failed to answer: {type(exc).__name__}",
                             code="upstream_error") from None
        try:
            return await self._relay(request, resp)
        finally:
            resp.release()

    async def _relay(self, request: web.Request, resp: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP)
        length = resp.content_length
        streamed = length is None or length > WHOLE_BODY_LIMIT or \
            resp.headers.get("Content-Type", "").startswith("text/event-stream")
        if not streamed:
            body = await resp.read()
            return web.Response(status=resp.status, reason=resp.reason, body=body, headers=headers)
        out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
        if length is not None:
            out.content_length = length
        await out.prepare(request)
        try:
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            # The function broke off mid-stream; cut ours too so the client sees it was incomplete.
            if request.transport is not None:
                request.transport.close()
            return out
        with contextlib.suppress(ConnectionResetError):
            await out.write_eof()
        return out


class LimitedBody:
    """A request body streamed upstream, cut off (and remembered as such) past `limit` bytes."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.exceeded = False

    async def stream(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.request.content.iter_any():
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise PayloadTooLarge(f"the request body is larger than {self.limit} bytes")
            yield chunk
