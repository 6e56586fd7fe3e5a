"""The gateway's app factory: the front door behind nginx.

Two ways to reach a function, chosen by who builds the app:
- embedded (`localai-studio up`): the functions run in this process and their routes are mounted
  right here, so a request costs no extra hop;
- distributed (`localai-studio run gateway`): each function is a container, reached by URL
  (`STUDIO_UPSTREAMS` / `STUDIO_UPSTREAM_TEMPLATE`) through `gateway.proxy`.

Either way the same route table decides which function owns a URL, and the same edge policy
(`gateway.edge`) applies. Without a route, GET serves the frontend's static files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

from events import asyncapi
from events.bus import Bus
from functions import NAMES, load
from gateway.credentials import Credentials
from gateway.docs import PAGE, events_page, html_page
from gateway.edge import REQUEST_ID_KEY, ROUTE_KEY, Edge, is_https, not_found
from gateway.inflight import BodyBudget
from gateway.live import LiveFeed
from gateway.openapi import document
from gateway.presence import Presence, report_forever
from gateway.proxy import Upstreams
from gateway.routes import GATEWAY_ROUTES, Route, RouteTable, RouteTableMismatch, declared
from gateway.session import OPERATOR_COOKIE, OPERATOR_MAX_AGE_S, Sessions
from gateway.static import StaticSite, default_frontend_dir
from studio.runtime.function import Function
from studio.runtime.identity import IDENTITY_KEY, identity
from studio.runtime.resources import live_streams_cap
from studio.runtime.settings import Settings

__all__ = ["ROUTE_TABLE", "RouteTableMismatch", "gateway_app", "served_functions"]

UPSTREAMS = web.AppKey("upstreams", Upstreams)
ROUTE_TABLE = web.AppKey("route_table", RouteTable)
LIVE = web.AppKey("live", LiveFeed)
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)  # the bytes of request bodies held at once (gateway.inflight)


def served_functions(hosted: Sequence[Function] | None, behind: Sequence[Function] | None) -> list[Function]:
    """The functions whose declared routes make the gateway's table, in either mode.

    Embedded: the functions hosted here, and the declarations of every other studio function (a
    route of a function not hosted here is still known: its policy applies, then it answers 404).
    Distributed: the functions behind the gateway, by default every studio function
    (`functions.NAMES`); their declarations are imported, not run, so the gateway knows the routes
    it must send to them.
    """
    if hosted is None:
        return list(behind) if behind is not None else [load(name) for name in NAMES]
    here = {fn.name for fn in hosted}
    return [*hosted, *(load(name) for name in NAMES if name not in here)]


def gateway_app(
    settings: Settings,
    *,
    functions: Sequence[Function] | None = None,
    bus: Bus | None = None,
    behind: Sequence[Function] | None = None,
) -> web.Application:
    """`functions` given: embedded (in-process); else distributed. `bus`: share this NATS connection
    (the embedded studio's), else the gateway opens its own for the live event stream. `behind`:
    distributed, the functions the upstreams run (default: every studio function). The route table
    is built from the routes those functions declare (gateway/routes.py)."""
    table = RouteTable(declared(served_functions(functions, behind)))
    embedded = functions is not None
    credentials = Credentials(None)  # bound to the gateway's NATS connection when the app starts
    edge = Edge(settings, table, Sessions(settings.cookie_key()), in_process=embedded, credentials=credentials)
    biggest = max([settings.max_body_bytes, *(r.body_limit(settings) for r in table.routes)])
    app = web.Application(middlewares=[edge.handle], client_max_size=biggest)
    app[ROUTE_TABLE] = table
    app[BODY_BUDGET] = edge.bodies
    app.on_response_prepare.append(edge.on_response_prepare)
    app.on_cleanup.append(lambda _: edge.deadlines.close())

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "service": "gateway", "mode": "embedded" if embedded else "distributed"}
        )

    app.router.add_get("/healthz", healthz)

    # The contracts are built at their first request, then the same bytes for every request: building them
    # (msgspec's schemas of every type) costs ~15 ms of CPU, which a studio that nobody asks them of never pays.
    built: dict[str, bytes] = {}

    def once(name: str, build: Callable[[], bytes]) -> bytes:
        if name not in built:
            built[name] = build()
        return built[name]

    async def openapi(request: web.Request) -> web.Response:
        contract = once("openapi", lambda: _json(document(table.routes)))
        return web.Response(body=contract, content_type="application/json")

    app.router.add_get("/api/openapi.json", openapi)

    async def api_docs(request: web.Request) -> web.Response:
        edge.operator_only(request[IDENTITY_KEY])
        return html_page(PAGE)

    app.router.add_get("/api/docs", api_docs)

    async def open_operator_pass(request: web.Request) -> web.Response:
        """The console's sign-in: the admin token (or an operator's session) buys a 12-hour operator cookie."""
        edge.operator_only(request[IDENTITY_KEY])
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            OPERATOR_COOKIE,
            edge.operator_passes.issue(time.time()),
            max_age=OPERATOR_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=is_https(request),
        )
        return response

    async def close_operator_pass(request: web.Request) -> web.Response:
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        response.del_cookie(OPERATOR_COOKIE, path="/", samesite="Strict")
        return response

    app.router.add_post("/api/operator/session", open_operator_pass)
    app.router.add_delete("/api/operator/session", close_operator_pass)

    # The event catalog's contract, for the operator (it names every internal event and its fields).
    async def asyncapi_json(request: web.Request) -> web.Response:
        edge.operator_only(request[IDENTITY_KEY])
        events_contract = once("asyncapi", lambda: _json(asyncapi.document()))
        return web.Response(body=events_contract, content_type="application/json")

    async def events_docs(request: web.Request) -> web.Response:
        edge.operator_only(request[IDENTITY_KEY])
        return html_page(once("events page", lambda: events_page(asyncapi.document())))

    app.router.add_get("/api/asyncapi.json", asyncapi_json)
    app.router.add_get("/api/docs/events", events_docs)
    app.cleanup_ctx.append(_live_feed(settings, bus, credentials, edge.presence))
    app.on_shutdown.append(lambda app: app[LIVE].close())

    async def live_events(request: web.Request) -> web.StreamResponse:
        return await request.app[LIVE].stream(request)

    app.router.add_get("/api/events", live_events)

    if embedded:
        assert functions is not None
        for fn in functions:
            for spec in fn.routes:
                handler = fn.http_handler(spec)
                app.router.add_route(spec.method, spec.path, handler)
                if spec.method == "GET":
                    app.router.add_route("HEAD", spec.path, handler)
    else:
        app.cleanup_ctx.append(_upstreams(settings))

    frontend = settings.frontend_dir or default_frontend_dir()
    site = StaticSite(frontend) if frontend is not None and frontend.is_dir() else None

    own_methods = {r.path: frozenset({r.method, "HEAD"} if r.method == "GET" else {r.method}) for r in GATEWAY_ROUTES}

    async def fallback(request: web.Request) -> web.StreamResponse:
        route: Route | None = request[ROUTE_KEY]
        if route is not None and not embedded:
            return await request.app[UPSTREAMS].forward(request, route, identity(request), request[REQUEST_ID_KEY])
        _, allowed = table.match(request.path, request.method)
        allowed = allowed or own_methods.get(request.path, frozenset())
        if route is None and not allowed and site is not None and request.method in ("GET", "HEAD"):
            page = site.response(request.path)
            if page is not None:
                return page
            if not request.path.startswith("/api/"):
                missing = site.not_found_page()
                if missing is not None:
                    return missing
        raise not_found(request, allowed)

    app.router.add_route("*", "/{tail:.*}", fallback)
    return app


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()  # as web.json_response would


def _live_feed(settings: Settings, shared: Bus | None, credentials: Credentials, presence: Presence):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bus = shared or Bus(
            settings.effective_nats_url(), name="gateway", source="/gateway", login=settings.nats_login("gateway")
        )
        if shared is None:
            await bus.connect(timeout=settings.nats_connect_timeout_s)
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        app[LIVE] = feed = LiveFeed(bus, max_streams=live_streams_cap(settings.live_streams_max, soft_limit))
        await feed.start()
        credentials.bus = bus
        await credentials.start()
        reporting = asyncio.create_task(
            report_forever(bus, presence, lambda: len(feed.subscribers), settings.heartbeat_s),
            name="gateway:server-report",
        )
        yield
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
        if shared is None:
            await bus.close(1)

    return ctx


def _upstreams(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        upstreams = Upstreams(settings)
        await upstreams.start()
        app[UPSTREAMS] = upstreams
        yield
        await upstreams.close()

    return ctx
