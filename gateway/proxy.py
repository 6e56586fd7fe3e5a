"""Distributed mode: the gateway forwards a request to its function's container over HTTP.

Requests go through `studio.clients.upstream` (a lean keep-alive HTTP/1.1 client). Small bodies are read
and sent whole; large or chunked ones are streamed, counted against the route's limit (and a chunked
one against the bodies in flight, `gateway.inflight`: its declared length took its share before). Responses
with a known small length are relayed whole; streams (server-sent events, chunked) chunk by chunk,
unbuffered. Upstream down -> 502, no answer within the route's timeout -> 504, both as JSON errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import ClientPayloadError, web
from multidict import CIMultiDict
from yarl import URL

from gateway.inflight import BODY_SHARE_KEY, BodyShare
from gateway.routes import Route
from studio.clients.upstream import UpstreamConnectError, UpstreamError, UpstreamPool, UpstreamResponse
from studio.runtime.addresses import client_address
from studio.runtime.errors import BadGateway, ClientHungUp, PayloadTooLarge, UpstreamUnavailable
from studio.runtime.identity import IDENTITY_HEADERS, Identity, to_headers
from studio.runtime.settings import Settings

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
# Expect: the gateway's server already answered the client's 100-continue; the body is on its way.
NOT_FORWARDED = HOP_BY_HOP | {
    h.lower()
    for h in (
        *IDENTITY_HEADERS,
        "Authorization",
        "X-Request-Id",
        "Expect",
        "X-Forwarded-For",  # replaced by the client this gateway resolved (studio.runtime.addresses)
        "X-Real-IP",
    )
}
WHOLE_BODY_LIMIT = 64 * 1024  # bodies up to this size are read and sent in one piece
STREAM_IDLE_S = 600.0


class Upstreams:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pools: dict[str, UpstreamPool] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()

    def pool_for(self, function: str) -> UpstreamPool:
        pool = self._pools.get(function)
        if pool is None:
            url = URL(self.settings.upstream_url(function))
            pool = self._pools[function] = UpstreamPool(url.host or "127.0.0.1", url.port or 80)
        return pool

    async def forward(self, request: web.Request, route: Route, who: Identity, request_id: str) -> web.StreamResponse:
        incoming = request.headers
        headers = [(k, v) for k, v in incoming.items() if k.lower() not in NOT_FORWARDED]
        headers.extend(to_headers(who).items())
        headers.append(("X-Request-Id", request_id))
        client = client_address(request, self.settings.trusted_proxies)  # what this gateway believes, only
        headers.append(("X-Forwarded-For", client))
        headers.append(("X-Real-IP", client))
        if "X-Forwarded-Proto" not in incoming:
            headers.append(("X-Forwarded-Proto", request.scheme))
        if "X-Forwarded-Host" not in incoming:
            headers.append(("X-Forwarded-Host", request.host))

        body = LimitedBody(request, route.body_limit(self.settings), request.get(BODY_SHARE_KEY))
        data: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            length = request.content_length
            data = await body.read() if length is not None and length <= WHOLE_BODY_LIMIT else body.stream()
        pool = self.pool_for(route.function)
        try:  # the route's deadline is kept by the edge (gateway.edge.Deadlines)
            resp = await pool.request(request.method, request.rel_url.raw_path_qs, headers, data)
        except (PayloadTooLarge, ClientHungUp, UpstreamUnavailable):  # the body's own: too big, gone, no room
            raise
        except UpstreamConnectError:
            raise BadGateway(
                f"the {route.function} function is unreachable; is its service running?", code="upstream_unreachable"
            ) from None
        except (UpstreamError, ConnectionError) as exc:
            if body.hung_up:
                raise ClientHungUp(f"the client hung up after {body.seen} bytes of its body") from None
            if body.exceeded:
                raise PayloadTooLarge(
                    f"the request body is larger than {body.limit} bytes", max_bytes=body.limit
                ) from None
            raise BadGateway(f"the {route.function} function failed to answer: {exc}", code="upstream_error") from None
        try:
            return await self._relay(request, resp)
        finally:
            resp.release()

    async def _relay(self, request: web.Request, resp: UpstreamResponse) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in resp.headers if k.lower() not in HOP_BY_HOP)
        length = resp.content_length
        streamed = (
            length is None
            or length > WHOLE_BODY_LIMIT
            or (resp.header("Content-Type") or "").startswith("text/event-stream")
        )
        if not streamed:
            try:
                body = await resp.read()
            except UpstreamError as exc:
                raise BadGateway(f"the function broke off its answer: {exc}", code="upstream_error") from None
            return web.Response(status=resp.status, reason=resp.reason, body=body, headers=headers)
        out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
        if length is not None:
            out.content_length = length
        await out.prepare(request)
        try:
            async for chunk in resp.chunks(idle_timeout=STREAM_IDLE_S):
                await out.write(chunk)
        except UpstreamError:
            # The function broke off mid-stream; cut ours too so the client sees it was incomplete.
            if request.transport is not None:
                request.transport.close()
            return out
        with contextlib.suppress(ConnectionResetError):
            await out.write_eof()
        return out


class LimitedBody:
    """A request body sent upstream, cut off (and remembered as such) past `limit` bytes; a client that
    hangs up mid-body is remembered too (an info line, not an upstream failure)."""

    def __init__(self, request: web.Request, limit: int, share: BodyShare | None = None) -> None:
        self.request = request
        self.limit = limit
        self.share = share if request.content_length is None else None  # a chunked body grows its share
        self.exceeded = False
        self.hung_up = False
        self.seen = 0

    async def read(self) -> bytes:
        try:
            return await self.request.read()
        except (ConnectionResetError, ClientPayloadError) as exc:
            self.hung_up = True
            raise ClientHungUp(f"the client hung up before its whole body arrived: {exc}") from None

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.request.content.iter_any():
                self.seen += len(chunk)
                if self.seen > self.limit:
                    self.exceeded = True
                    raise PayloadTooLarge(f"the request body is larger than {self.limit} bytes", max_bytes=self.limit)
                if self.share is not None:
                    self.share.grow(len(chunk))
                yield chunk
        except (ConnectionResetError, ClientPayloadError):
            self.hung_up = True
            raise
