"""What the gateway does to every request before a function sees it, and to every response.

- request id: forwarded if the client sent a sane `X-Request-Id`, else assigned; it becomes the
  correlation id of every log line and event the request causes, and is echoed in the response;
- route policy from the route table: body size (413), operator-only routes (401/403), and in
  embedded mode the deadline for the function to start answering (504);
- the bytes of bodies held at once (`gateway.inflight`): a body that would pass
  STUDIO_BODY_BYTES_IN_FLIGHT is a 503 with Retry-After before it is read;
- identity: the admin bearer token, a personal API key (`Authorization: Bearer`, or Anthropic's
  `x-api-key`), a signed-in session (both checked through `gateway.credentials`, cached), or the
  visitor's signed cookie (issued on the first visit);
  identity headers a client sent are never trusted;
- the hostile visitor's guards (`gateway.guards`): per-address stream and write limits (429),
  cross-site state changes (403), state changes without a session on session routes (401), and in
  embedded mode a body that trickles slower than one read per STUDIO_CLIENT_TIMEOUT_S (408);
- security headers (the seed's: CSP, HSTS behind HTTPS, nosniff, frame denial, referrer policy)
  on every response, errors and streams included;
- errors rendered as JSON, and one JSON access-log line per request.

All of it is one middleware, `Edge.handle`, which reads as those steps in order, each a named
method: one aiohttp middleware layer per job would cost a coroutine per layer per request, and this
is the hot path of every request (tests/bench/gateway_bench.py). The response's headers are set in
`on_response_prepare`, the one place that sees streams and errors alike.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import re
import time

from aiohttp import ClientPayloadError, StreamReader, web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from events.correlation import correlation_id
from gateway.credentials import KEY_PREFIX, Credentials
from gateway.guards import (
    AddressLimits,
    changes_state,
    is_stream,
    refuse_cross_site,
    refuse_without_session,
)
from gateway.inflight import BODY_SHARE_KEY, FULL, BodyBudget, BodyShare
from gateway.presence import Presence
from gateway.routes import Route, RouteTable
from gateway.session import COOKIE, MAX_AGE_S, OPERATOR_COOKIE, OperatorPasses, Sessions
from studio.runtime.addresses import client_address
from studio.runtime.errors import (
    ClientHungUp,
    Forbidden,
    GatewayTimeout,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    StudioError,
    Unauthorized,
    UpstreamUnavailable,
    render,
)
from studio.runtime.identity import EVICT_HEADER, IDENTITY_KEY, SESSION_COOKIE, Identity
from studio.runtime.settings import Settings
from studio.runtime.watchdog import Watchdog

access_log = logging.getLogger("studio.gateway.access")

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

ROUTE_KEY: web.RequestKey[Route | None] = web.RequestKey("route")
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
_SESSION_MARK = SESSION_COOKIE + "="
_OPERATOR_MARK = OPERATOR_COOKIE + "="


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
    def __init__(
        self,
        settings: Settings,
        table: RouteTable,
        sessions: Sessions,
        *,
        in_process: bool,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.sessions = sessions
        self.in_process = in_process  # embedded: functions run here and read the request's own stream
        self.new_id = RequestIds()
        # A function must start answering within its route's timeout, else 504: one watchdog for
        # every request instead of a timer each (tests/bench/deadline_bench.py: half the cost of
        # `asyncio.timeout`, ~5 us of a ~40 us request; studio/runtime/watchdog.py has the figures).
        self.deadlines = Watchdog("gateway-deadlines")
        self._visitors: dict[str, str] = {}  # Cookie header -> verified user id (HMAC once per visitor)
        self.limits = AddressLimits(settings.streams_per_address, settings.writes_per_address_per_minute)
        self.bodies = BodyBudget(settings.body_bytes_in_flight)
        self.credentials = credentials or Credentials(None)
        self.presence = Presence()  # visitors seen lately: the "when to scale" signal (gateway.presence)
        self.operator_passes = OperatorPasses(settings.cookie_key(), settings.admin_token.get() or None)

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = correlation_id.set(self.tag(request))
        started = time.perf_counter()
        route: Route | None = None
        status = 500
        share: BodyShare | None = None
        try:
            route, allowed = self.table.match(request.path, request.method)
            if route is None and request.path.startswith(OPENAI_PREFIX):
                raise openai_not_found(request, allowed)  # before the key is judged: an API path, not a page
            request[ROUTE_KEY] = route
            limit = self.limit_body(request, route)
            request[BODY_SHARE_KEY] = share = self.bodies.take(request)  # 503 before a byte is read
            request[IDENTITY_KEY] = who = await self.identify(request, route)
            if who.user_id and NEW_COOKIE_KEY not in request:  # a returning visitor (not a cookie-less hit)
                self.presence.seen(who.user_id)
            self.require_operator(route, who)
            self.guard(request, route, who)
            if self.in_process and (request.content_length or request.body_exists) and not arrived(request):
                deadline = route.timeout if route is not None else self.settings.client_timeout_s
                request = await read_body(request, limit, self.settings.client_timeout_s, deadline, share)
            release = self.open_stream(request, route)
            try:
                if route is not None:
                    response = await self._within_deadline(request, handler, route)
                else:
                    response = await handler(request)
            finally:
                if release is not None:
                    release()
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client closed the request (nginx's name for it): nobody to answer
            raise
        except Exception as exc:
            rendered = render(request, exc)
            if rendered is None:
                raise
            if isinstance(exc, RequestTimeout) or getattr(exc, "code", None) == FULL:
                # The rest of a stalled body is not worth waiting for; nor is a refused one worth reading
                # to throw away (thirty 56 MB bodies read for nothing cost /healthz seconds: body_bench.py).
                rendered.force_close()
            status = rendered.status
            return rendered
        finally:
            if share is not None:
                share.release()  # answered, refused or hung up: the body is let go
            log_access(request, route, status, started)
            correlation_id.reset(token)

    def tag(self, request: web.Request) -> str:
        """The request id: the client's if sane, else a new one."""
        sent = request.headers.get(REQUEST_ID_HEADER)
        request[REQUEST_ID_KEY] = request_id = sent if sent and _SANE_ID.fullmatch(sent) else self.new_id()
        return request_id

    def limit_body(self, request: web.Request, route: Route | None) -> int:
        """The route's body limit; 413 at once when the declared length is past it."""
        length = request.content_length
        limit = route.body_limit(self.settings) if route else self.settings.max_body_bytes
        if length is not None and length > limit:
            raise PayloadTooLarge(
                f"the request body is {length} bytes; this route accepts at most {limit}", max_bytes=limit
            )
        return limit

    def require_operator(self, route: Route | None, who: Identity) -> None:
        if route is not None and route.operator:
            self.operator_only(who)

    def operator_only(self, who: Identity) -> None:
        """401 (or 403 while operator routes are closed) unless `who` is the operator; the gateway's own
        operator pages (/api/docs) refuse the same way as the route table's operator routes."""
        if not who.admin:
            if not self.settings.admin_token:
                raise Forbidden(
                    "operator routes are closed: set STUDIO_ADMIN_TOKEN to open them", code="admin_disabled"
                )
            raise Unauthorized(
                "operator only: send Authorization: Bearer $STUDIO_ADMIN_TOKEN",
                code="admin_only",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def guard(self, request: web.Request, route: Route | None, who: Identity) -> None:
        """Cross-site state changes (403), state changes without a session (401), writes per address (429)."""
        if not changes_state(request):
            return
        refuse_cross_site(request, route, self.settings)
        try:
            refuse_without_session(request, route, NEW_COOKIE_KEY in request, who.admin)
        except Unauthorized:
            del request[NEW_COOKIE_KEY]  # refused: no visitor is minted for it either
            raise
        self.limits.count_write(client_address(request, self.settings.trusted_proxies))

    def open_stream(self, request: web.Request, route: Route | None):
        """A stream (live events, chat) takes one of its address's slots until it ends (429 when none is left)."""
        if not is_stream(request, route):
            return None
        return self.limits.open_stream(client_address(request, self.settings.trusted_proxies))

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

    async def identify(self, request: web.Request, route: Route | None) -> Identity:
        headers = request.headers
        auth = headers.get("Authorization")
        admin = False
        if not auth and "x-api-key" in headers:  # Anthropic's clients send the key so (ANTHROPIC_API_KEY)
            return await self.key_identity(headers["x-api-key"].strip(), route)
        if auth:
            scheme, _, token = auth.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token.startswith(KEY_PREFIX):
                return await self.key_identity(token, route)
            expected = self.settings.admin_token.get()
            if scheme.lower() != "bearer" or not expected or not hmac.compare_digest(token, expected):
                raise Unauthorized(
                    "the Authorization header does not carry the operator's token",
                    code="invalid_token",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            admin = True
        raw_cookie = headers.get("Cookie")
        if not admin and raw_cookie and _OPERATOR_MARK in raw_cookie:
            admin = self.operator_passes.verify(request.cookies.get(OPERATOR_COOKIE), time.time())
        user_id = self._visitors.get(raw_cookie) if raw_cookie else None
        if user_id is None and raw_cookie:
            user_id = self.sessions.verify(request.cookies.get(COOKIE))
            if user_id is not None:
                if len(self._visitors) >= COOKIE_CACHE_SIZE:
                    self._visitors.clear()
                self._visitors[raw_cookie] = user_id
        if raw_cookie and _SESSION_MARK in raw_cookie:
            signed_in = await self.session_identity(request, route, user_id, admin)
            if signed_in is not None:
                return signed_in
        if user_id is None and (route is None or route.visitor):
            user_id, cookie = self.sessions.issue()
            request[NEW_COOKIE_KEY] = cookie
        return Identity(user_id=user_id, admin=admin)

    # -- accounts: signed-in sessions and personal API keys (gateway.credentials) ----------------

    async def session_identity(
        self, request: web.Request, route: Route | None, visitor_id: str | None, admin: bool
    ) -> Identity | None:
        """The signed-in account of the session cookie, or None (unknown or ended: carry on as a visitor).

        Pages (no route) are served even when accounts cannot be checked; API routes answer 503 then."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        try:
            held = await self.credentials.session(token)
        except UpstreamUnavailable:
            if route is None:
                return None
            raise
        if held.account_id is None:
            return None
        return Identity(
            user_id=held.account_id,
            admin=admin or held.role == "operator",
            account_id=held.account_id,
            role=held.role,
            visitor_id=visitor_id,
            email=held.email,
            session_id=held.session_hash,
        )

    async def key_identity(self, key: str, route: Route | None) -> Identity:
        """A personal API key: only on the routes that take one (/v1, chat), and only while it lives.

        Off the route table (a page, `HEAD /` that Claude Code probes, a path that does not exist) the key
        is not needed: the request goes on as nobody's, and the page or the 404 answers it."""
        if route is None:
            return Identity()
        if not key.startswith(KEY_PREFIX):
            raise Unauthorized(
                f"this is not a studio API key (they start with {KEY_PREFIX}): create one on your account page",
                code="invalid_api_key",
                type="invalid_request_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not route.keys:
            raise Forbidden(
                "API keys work on /v1 only; sign in to the studio for this",
                code="key_not_allowed",
                type="invalid_request_error",
            )
        held = await self.credentials.key(key)
        if held.account_id is None:
            raise Unauthorized(
                "this API key is unknown or was revoked: create one on your account page",
                code="invalid_api_key",
                type="invalid_request_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # An operator's key is still just an account's key: it never carries the operator's powers.
        return Identity(
            user_id=held.account_id, account_id=held.account_id, key_id=held.key_id, role=held.role, email=held.email
        )

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
        evict = headers.get(EVICT_HEADER)
        if evict is not None:  # the accounts function ended sessions or keys: forget them here at once
            del headers[EVICT_HEADER]
            self.credentials.forget(evict)
        cookie = request.get(NEW_COOKIE_KEY)
        if cookie:
            # Headers are already serialised when this signal runs, so add the header itself.
            secure = "; Secure" if https else ""
            headers.add("Set-Cookie", f"{COOKIE}={cookie}; Max-Age={MAX_AGE_S}; Path=/; HttpOnly; SameSite=Lax{secure}")


def log_access(request: web.Request, route: Route | None, status: int, started: float) -> None:
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


def arrived(request: web.Request) -> bool:
    """The whole body is here already, within its declared length (checked against the limit): nothing to
    bound or wait for, and no copy to make (most bodies arrive with their headers: a chat request)."""
    return request.content_length is not None and request.content.is_eof()


async def read_body(
    request: web.Request, limit: int, timeout: float, deadline: float, share: BodyShare | None = None
) -> web.Request:
    """Embedded mode: read the body (up to `limit`, else 413; each read within `timeout` and the whole
    body within `deadline`, the route's, else 408; a chunked one counted against the bodies in flight
    as it arrives, else 503) so the function reads a bounded copy that is already here.

    Over HTTP the proxy counts bytes as it streams them, within the route's deadline; in-process the
    function would read the socket's stream itself, past any limit and for as long as a slow client
    cares to trickle it (nginx's client_body_timeout is the model, per read; the total deadline stops
    a byte every few seconds from holding a request open for ever), so the body is taken off the
    wire here first. A client that hangs up mid-body is an info line: nothing is left to answer.
    """
    buffered = bytearray()
    chunked = request.content_length is None  # a declared length took its share before reading
    content = request.content
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + deadline
    while True:
        left = ends_at - loop.time()
        try:
            async with asyncio.timeout(min(timeout, max(left, 0))):
                chunk = await content.readany()
        except TimeoutError:
            if left <= timeout:
                raise RequestTimeout(
                    f"the request body did not arrive within {deadline:g} s", code="body_timeout"
                ) from None
            raise RequestTimeout(
                f"the request body stalled: nothing arrived for {timeout:g} s", code="body_timeout"
            ) from None
        except (ConnectionResetError, ClientPayloadError) as exc:
            raise ClientHungUp(f"the client hung up after {len(buffered)} bytes of its body: {exc}") from None
        if not chunk:
            break
        buffered += chunk
        if len(buffered) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes", max_bytes=limit)
        if share is not None and chunked:
            share.grow(len(chunk))
    body = bytes(buffered)
    del buffered
    # A limit above the body's size: the copy never asks the (finished) connection to pause reading.
    copy = StreamReader(request.protocol, limit=max(2**16, len(body) + 1), loop=loop)
    copy.feed_data(body)
    copy.feed_eof()
    request._payload = copy  # `clone()` builds the new request on this payload (aiohttp has no public way)
    cloned = request.clone()
    # What `read()` would build from that payload, already built: aiohttp's read() joins the chunks, copies
    # them into a bytearray and that into bytes, three copies of a 50 MB body at once (body_bench.py).
    cloned._read_bytes = body
    return cloned


OPENAI_PREFIX = "/v1/"


def openai_not_found(request: web.Request, allowed: frozenset[str]) -> StudioError:
    """A /v1 path the studio does not serve: 404 (or 405) in OpenAI's error shape, whoever asks, so a
    client holding an API key learns the path is wrong, not that its key is (never 403 key_not_allowed)."""
    error = not_found(request, allowed)
    error.details["type"] = "invalid_request_error"
    return error


def not_found(request: web.Request, allowed: frozenset[str] = frozenset()) -> StudioError:
    if allowed:
        return MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; allowed: {', '.join(sorted(allowed))}",
            headers={"Allow": ", ".join(sorted(allowed))},
        )
    return NotFound(f"no such route: {request.method} {request.path}", code="no_route")
