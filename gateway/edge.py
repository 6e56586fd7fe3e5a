"""What the gateway does to every request before a function sees it, and to every response.

- request id: forwarded if the client sent a sane `X-Request-Id`, else assigned; it becomes the
  correlation id of every log line and event the request causes, and is echoed in the response;
- route policy from the route table: body size (413), operator-only routes (401/403);
- identity: the admin bearer token, or the visitor's signed cookie (issued on the first visit);
  identity headers a client sent are never trusted;
- security headers (the seed's: CSP, HSTS behind HTTPS, nosniff, frame denial, referrer policy)
  on every response, errors and streams included;
- one JSON access-log line per request.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from events.correlation import correlation_id
from events.envelope import new_id
from functions.runtime.errors import (
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StudioError,
    Unauthorized,
)
from functions.runtime.identity import IDENTITY_KEY, Identity
from functions.runtime.settings import Settings
from gateway.routes import Route, RouteTable
from gateway.session import COOKIE, MAX_AGE_S, Sessions

access_log = logging.getLogger("studio.gateway.access")

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

ROUTE_KEY = "gateway.route"
REQUEST_ID_KEY = "gateway.request_id"
NEW_COOKIE_KEY = "gateway.new_cookie"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def is_https(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


@dataclass(frozen=True)
class Edge:
    settings: Settings
    table: RouteTable
    sessions: Sessions

    def route_of(self, request: web.Request) -> Route | None:
        return request.get(ROUTE_KEY)

    @web.middleware
    async def outer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request id, correlation context and the access log around everything else."""
        sent = request.headers.get(REQUEST_ID_HEADER)
        request_id = sent if sent and _SANE_ID.fullmatch(sent) else new_id()
        request[REQUEST_ID_KEY] = request_id
        token = correlation_id.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = request.get(ROUTE_KEY)
            access_log.info(
                "%s %s %d", request.method, request.path, status,
                extra={"method": request.method, "path": request.path, "status": status,
                       "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                       "function": route.function if route else None},
            )
            correlation_id.reset(token)

    @web.middleware
    async def policy(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Route lookup, body limit, identity and operator-only routes."""
        route, _ = self.table.match(request.path, request.method)
        request[ROUTE_KEY] = route
        limit = (route.max_body if route and route.max_body else None) or self.settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"the request body is {length} bytes; this route accepts at most {limit}",
                                  max_bytes=limit)
        who = self.identify(request, route)
        request[IDENTITY_KEY] = who
        if route is not None and route.admin and not who.admin:
            if not self.settings.admin_token:
                raise Forbidden("operator routes are closed: set STUDIO_ADMIN_TOKEN to open them",
                                code="admin_disabled")
            raise Unauthorized("operator only: send Authorization: Bearer $STUDIO_ADMIN_TOKEN",
                               code="admin_only", headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    def identify(self, request: web.Request, route: Route | None) -> Identity:
        auth = request.headers.get("Authorization", "")
        admin = False
        if auth:
            scheme, _, token = auth.partition(" ")
            expected = self.settings.admin_token.get()
            if scheme.lower() != "bearer" or not expected or not hmac.compare_digest(token.strip(), expected):
                raise Unauthorized("the Authorization header does not carry the operator's token",
                                   code="invalid_token", headers={"WWW-Authenticate": "Bearer"})
            admin = True
        user_id = self.sessions.verify(request.cookies.get(COOKIE))
        if user_id is None and (route is None or route.visitor):
            user_id, cookie = self.sessions.issue()
            request[NEW_COOKIE_KEY] = cookie
        return Identity(user_id=user_id, admin=admin)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        for name, value in SECURITY_HEADERS.items():
            headers.setdefault(name, value)
        https = is_https(request)
        if https:
            headers.setdefault("Strict-Transport-Security", HSTS)
        request_id = request.get(REQUEST_ID_KEY)
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        cookie = request.get(NEW_COOKIE_KEY)
        if cookie:
            # Headers are already serialised when this signal runs, so add the header itself.
            secure = "; Secure" if https else ""
            headers.add("Set-Cookie", f"{COOKIE}={cookie}; Max-Age={MAX_AGE_S}; Path=/; HttpOnly; "
                                      f"SameSite=Lax{secure}")


def not_found(request: web.Request, allowed: frozenset[str] = frozenset()) -> StudioError:
    if allowed:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}; allowed: "
                                f"{', '.join(sorted(allowed))}", headers={"Allow": ", ".join(sorted(allowed))})
    return NotFound(f"no such route: {request.method} {request.path}", code="no_route")
