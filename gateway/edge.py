"""What the gateway does to every request before a function sees it, and to every response.

- request id: forwarded if the client sent a sane `X-Request-Id`, else assigned; it becomes the
  correlation id of every log line and event the request causes, and is echoed in the response;
- route policy from the route table: body size (413), operator-only routes (401/403), and in
  embedded mode the deadline for the function to start answering (504);
- identity: the admin bearer token, or the visitor's signed cookie (issued on the first visit);
  identity headers a client sent are never trusted;
- security headers (the seed's: CSP, HSTS behind HTTPS, nosniff, frame denial, referrer policy)
  on every response, errors and streams included;
- errors rendered as JSON, and one JSON access-log line per request.

All of it is one middleware: each aiohttp middleware layer costs a coroutine per request, and this
is the hot path of every request (tests/bench/gateway_bench.py).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import re
import time

from aiohttp import StreamReader, web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from events.correlation import correlation_id
from gateway.routes import Route, RouteTable
from gateway.session import COOKIE, MAX_AGE_S, Sessions
from studio.runtime.errors import (
    Forbidden,
    GatewayTimeout,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StudioError,
    Unauthorized,
    render,
)
from studio.runtime.identity import IDENTITY_KEY, Identity
from studio.runtime.settings import Settings
from studio.runtime.watchdog import Watchdog

access_log = logging.getLogger("studio.gateway.access")

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

ROUTE_KEY = web.RequestKey("route", Route | None)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
NEW_COOKIE_KEY = web.RequestKey("new_cookie", str)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_SECURITY = CIMultiDict(SECURITY_HEADERS)
HSTS = "max-age=31536000; includeSubDomains"
COOKIE_CACHE_SIZE = 10_000


class RequestIds:
    """Unique ids without a syscall per request: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"


def is_https(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


class Edge:
    def __init__(self, settings: Settings, table: RouteTable, sessions: Sessions, *, in_process: bool) -> None:
        self.settings = settings
        self.table = table
        self.sessions = sessions
        self.in_process = in_process  # embedded: functions run here and read the request's own stream
        self.new_id = RequestIds()
        # A function must start answering within its route's timeout, else 504: one watchdog for
        # every request instead of a timer each (`asyncio.timeout` costs ~7 us, a tenth of a request).
        self.deadlines = Watchdog("gateway-deadlines")
        self._visitors: dict[str, str] = {}  # Cookie header -> verified user id (HMAC once per visitor)

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = request.headers
        sent = headers.get(REQUEST_ID_HEADER)
        request_id = sent if sent and _SANE_ID.fullmatch(sent) else self.new_id()
        request[REQUEST_ID_KEY] = request_id
        token = correlation_id.set(request_id)
        started = time.perf_counter()
        route: Route | None = None
        status = 500
        try:
            route, _ = self.table.match(request.path, request.method)
            request[ROUTE_KEY] = route
            request = await self._admit(request, route)
            if route is not None:
                response = await self._within_deadline(request, handler, route)
            else:
                response = await handler(request)
            status = response.status
            return response
        except Exception as exc:
            response = render(request, exc)
            if response is None:
                raise
            status = response.status
            return response
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d",
                    request.method,
                    request.path,
                    status,
                    extra={
                        "method": request.method,
                        "path": request.path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "function": route.function if route else None,
                    },
                )
            correlation_id.reset(token)

    async def _admit(self, request: web.Request, route: Route | None) -> web.Request:
        """Body limit, identity and operator-only routes; may return a request with a bounded body."""
        length = request.content_length
        if length is not None or request.body_exists:
            limit = route.body_limit(self.settings) if route else self.settings.max_body_bytes
            if length is not None and length > limit:
                raise PayloadTooLarge(
                    f"the request body is {length} bytes; this route accepts at most {limit}", max_bytes=limit
                )
            if length is None and self.in_process:
                request = await bound_chunked_body(request, limit)
        who = self.identify(request, route)
        request[IDENTITY_KEY] = who
        if route is not None and route.admin and not who.admin:
            if not self.settings.admin_token:
                raise Forbidden(
                    "operator routes are closed: set STUDIO_ADMIN_TOKEN to open them", code="admin_disabled"
                )
            raise Unauthorized(
                "operator only: send Authorization: Bearer $STUDIO_ADMIN_TOKEN",
                code="admin_only",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return request

    async def _within_deadline(self, request: web.Request, handler: Handler, route: Route) -> web.StreamResponse:
        at = asyncio.get_running_loop().time() + route.timeout
        watched = self.deadlines.watch(lambda: asyncio.get_running_loop().time() >= at)
        try:
            return await handler(request)
        except asyncio.CancelledError as exc:
            if watched.owns(exc):
                raise GatewayTimeout(
                    f"the {route.function} function did not answer within {route.timeout:g} s", code="upstream_timeout"
                ) from None
            raise
        finally:
            self.deadlines.release(watched.task)

    def identify(self, request: web.Request, route: Route | None) -> Identity:
        headers = request.headers
        auth = headers.get("Authorization")
        admin = False
        if auth:
            scheme, _, token = auth.partition(" ")
            expected = self.settings.admin_token.get()
            if scheme.lower() != "bearer" or not expected or not hmac.compare_digest(token.strip(), expected):
                raise Unauthorized(
                    "the Authorization header does not carry the operator's token",
                    code="invalid_token",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            admin = True
        raw_cookie = headers.get("Cookie")
        user_id = self._visitors.get(raw_cookie) if raw_cookie else None
        if user_id is None and raw_cookie:
            user_id = self.sessions.verify(request.cookies.get(COOKIE))
            if user_id is not None:
                if len(self._visitors) >= COOKIE_CACHE_SIZE:
                    self._visitors.clear()
                self._visitors[raw_cookie] = user_id
        if user_id is None and (route is None or route.visitor):
            user_id, cookie = self.sessions.issue()
            request[NEW_COOKIE_KEY] = cookie
        return Identity(user_id=user_id, admin=admin)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # A response has started (maybe a stream): the deadline no longer applies.
        self.deadlines.release(asyncio.current_task())
        headers = response.headers
        headers.update(_SECURITY)
        https = is_https(request)
        if https:
            headers["Strict-Transport-Security"] = HSTS
        request_id = request.get(REQUEST_ID_KEY)
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        cookie = request.get(NEW_COOKIE_KEY)
        if cookie:
            # Headers are already serialised when this signal runs, so add the header itself.
            secure = "; Secure" if https else ""
            headers.add("Set-Cookie", f"{COOKIE}={cookie}; Max-Age={MAX_AGE_S}; Path=/; HttpOnly; SameSite=Lax{secure}")


async def bound_chunked_body(request: web.Request, limit: int) -> web.Request:
    """Embedded mode, chunked body: read it (up to `limit`, else 413) so the function reads a bounded copy.

    Over HTTP the proxy counts bytes as it streams them; in-process the function would read the
    socket's stream itself, past any limit, so the body is taken off the wire here first.
    """
    buffered = bytearray()
    async for chunk in request.content.iter_any():
        buffered += chunk
        if len(buffered) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes", max_bytes=limit)
    copy = StreamReader(request.protocol, limit=2**16, loop=asyncio.get_running_loop())
    copy.feed_data(bytes(buffered))
    copy.feed_eof()
    request._payload = copy  # `clone()` builds the new request on this payload (aiohttp has no public way)
    return request.clone()


def not_found(request: web.Request, allowed: frozenset[str] = frozenset()) -> StudioError:
    if allowed:
        return MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; allowed: {', '.join(sorted(allowed))}",
            headers={"Allow": ", ".join(sorted(allowed))},
        )
    return NotFound(f"no such route: {request.method} {request.path}", code="no_route")
