"""ping: the lightest JSON endpoint, for measuring what the gateway adds."""

from __future__ import annotations

from aiohttp import web

from studio.runtime.function import Function

function = Function("ping")


@function.route("GET", "/api/ping", timeout=5)
async def pong(request: web.Request) -> web.Response:
    return web.json_response({"pong": True})
