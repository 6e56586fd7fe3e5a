"""ping: the lightest JSON endpoint, for measuring what the gateway adds."""

from __future__ import annotations

from aiohttp import web

from gateway.routes import ROUTES, Route
from studio.runtime.function import Function

function = Function("ping")
ROUTES_WITH_PING = (*ROUTES, Route("/api/ping", "ping", timeout=5))


@function.route("GET", "/api/ping")
async def pong(request: web.Request) -> web.Response:
    return web.json_response({"pong": True})
