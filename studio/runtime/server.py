"""One function served alone over HTTP, as its container runs it (`localai-studio run <function>`).

The gateway reaches it by URL and passes the request id and the visitor's identity in headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from events.correlation import correlation_id
from events.envelope import new_id
from studio.runtime.errors import error_middleware
from studio.runtime.function import Function
from studio.runtime.host import Host
from studio.runtime.identity import IDENTITY_KEY, from_headers
from studio.runtime.settings import Settings

HOST_KEY = web.AppKey("host", Host)
REQUEST_ID_HEADER = "X-Request-Id"


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id into the correlation context, gateway-asserted identity onto the request."""
    request_id = request.headers.get(REQUEST_ID_HEADER) or new_id()
    token = correlation_id.set(request_id)
    request[IDENTITY_KEY] = from_headers(request)
    try:
        response = await handler(request)
    finally:
        correlation_id.reset(token)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def function_app(function: Function, settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[context_middleware, error_middleware],
        client_max_size=max([settings.max_body_bytes, *(r.body_limit(settings) for r in function.routes)]),
    )
    for spec in function.routes:
        handler = function.http_handler(spec)
        app.router.add_route(spec.method, spec.path, handler)
        if spec.method == "GET":  # HEAD is answered as GET is (aiohttp leaves the body out)
            app.router.add_route("HEAD", spec.path, handler)

    async def healthz(request: web.Request) -> web.Response:
        host = request.app[HOST_KEY]
        ok = host.running
        return web.json_response(
            {
                "status": "ok" if ok else "starting",
                "function": function.name,
                "instance": host.instance,
                "nats_connected": host.bus.connected,
            },
            status=200 if ok else 503,
        )

    app.router.add_get("/healthz", healthz)

    async def run_host(app: web.Application) -> AsyncIterator[None]:
        host = Host([function], settings, service=function.name)
        app[HOST_KEY] = host
        await host.start()
        yield
        await host.stop()

    app.cleanup_ctx.append(run_host)
    return app
