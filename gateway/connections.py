"""The gateway's connections, below the request: what aiohttp does before any middleware runs.

- a header deadline (STUDIO_CLIENT_TIMEOUT_S, nginx's client_header_timeout): a connection that has
  not sent a whole request head within it, from its opening or from the first byte of its next
  request, is closed; so a slowloris client cannot hold sockets open a line every few seconds
  (aiohttp alone waits for its keep-alive timeout, 75 s, and only on a silent connection);
- aiohttp's own error answers (a header or URL over 8190 bytes, a malformed request line, a bad
  method) come out as the studio's JSON error with the security headers, echo nothing of the input
  and are logged at info: they are the client's mistake, not the server's.

aiohttp has no setting for either, so the runner's server builds `EdgeConnection`s (a subclass of
aiohttp's protocol) instead of its own: `EdgeRunner` in place of `web.AppRunner`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.edge import SECURITY_HEADERS

log = logging.getLogger("studio.gateway.connections")


def _reason(status: int, exc: BaseException | None) -> tuple[str, str]:
    if isinstance(exc, LineTooLong):
        return "request_too_large", "a header line or the URL is too long (at most 8190 bytes each)"
    if isinstance(exc, BadHttpMethod):
        return "bad_method", "the request method is not a valid HTTP method"
    if status >= 500:
        return "internal_error", "internal error; the operator can find it in the logs"
    phrase = HTTPStatus(status).phrase.lower() if status in HTTPStatus._value2member_map_ else "bad request"
    return "bad_request", f"the request could not be read as HTTP ({phrase})"


class EdgeConnection(RequestHandler):
    __slots__ = ("_head_deadline", "_head_timeout")

    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._expect_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = self._current_request is None and not self._messages
        parsed = self._request_count
        super().data_received(data)
        if self._request_count > parsed:
            self._head_arrived()
        elif idle and data and self._head_deadline is None:
            self._expect_head()  # the first bytes of the next request on a kept-alive connection

    def _expect_head(self) -> None:
        self._head_deadline = self._loop.call_later(self._head_timeout, self._head_late)

    def _head_arrived(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if self._current_request is None and not self._messages and self.transport is not None:
            log.info(
                "closed a connection that sent no whole request head in %g s",
                self._head_timeout,
                extra={"peer": str(self.transport.get_extra_info("peername"))},
            )
            self.force_close()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
        else:
            log.info("refused an unreadable request: %s", type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is closed instead")
        code, text = _reason(status, exc)
        response = web.Response(
            status=status,
            body=json.dumps({"error": {"code": code, "message": text}}).encode(),
            content_type="application/json",
            headers=SECURITY_HEADERS,
        )
        response.force_close()
        return response


class EdgeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return EdgeConnection(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """`web.AppRunner` whose connections are `EdgeConnection`s (head deadline: `head_timeout` s)."""

    def __init__(self, app: web.Application, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._kwargs["head_timeout"] = head_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = EdgeServer  # the same server; only the protocol it builds differs
        return server
