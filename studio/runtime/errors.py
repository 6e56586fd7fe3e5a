"""One error mechanism for functions and gateway: raise a `StudioError`, get a JSON error response.

Every error response is `{"error": {"code": "...", "message": "..."}}` (plus optional details).
Anything unexpected becomes a logged 500 that leaks no internals. An outage of what every request
leans on (the disk, the database, NATS) is a 503 with Retry-After, counted and logged once a minute
(`studio.runtime.shortages`, which also alerts), not a traceback a request.

Each API speaks its own dialect (`dialect(path)`), whoever raised the error (gateway or function):
- Anthropic's Messages API (`/v1/messages...`): the same error in Anthropic's shape, which keeps the
  studio's fields: `{"type": "error", "error": {"type": "invalid_request_error", "message", "code"}}`,
  with Anthropic's statuses (503 becomes 529 `overloaded_error`), so its clients raise the right
  exception and retry what may be retried;
- OpenAI's API (every other `/v1/` path): the studio's error with OpenAI's `type` beside its code and
  message (`invalid_request_error`, `rate_limit_error`, ...; `param` where a field is to blame);
- everything else: the studio's `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import PayloadEncodingError
from aiohttp.typedefs import Handler

from events.bus import is_bus_outage
from studio.runtime.shortages import SHORTAGES, is_disk_full
from studio.runtime.sql import DatabaseUnavailable

log = logging.getLogger("studio.http")
# What reading a request body raises when the client left mid-body (a short body, a reset).
PAYLOAD_ERRORS = (ClientPayloadError, PayloadEncodingError)


class StudioError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}
        self.details = details

    def to_response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return error_response(self.status, body, self.headers)


class BadRequest(StudioError):
    status, code = 400, "bad_request"


class Unauthorized(StudioError):
    status, code = 401, "unauthorized"


class Forbidden(StudioError):
    status, code = 403, "forbidden"


class NotFound(StudioError):
    status, code = 404, "not_found"


class MethodNotAllowed(StudioError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(StudioError):
    status, code = 408, "request_timeout"


class Conflict(StudioError):
    status, code = 409, "conflict"


class PayloadTooLarge(StudioError):
    status, code = 413, "payload_too_large"


class TooManyRequests(StudioError):
    status, code = 429, "rate_limited"


class ClientHungUp(StudioError):
    """The client closed the connection before its request was read: nobody is left to answer."""

    status, code = 499, "client_hung_up"  # nginx's status for a request its client closed


class InsufficientStorage(StudioError):
    status, code = 507, "insufficient_storage"


class BadGateway(StudioError):
    status, code = 502, "bad_gateway"


class UpstreamUnavailable(StudioError):
    status, code = 503, "unavailable"


class GatewayTimeout(StudioError):
    status, code = 504, "timeout"


class DiskFull(StudioError):
    status, code = 503, "disk_full"
    MESSAGE = (
        "the studio cannot take purchases or save anything right now (its disk is full); try again in a few minutes"
    )

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message, headers={"Retry-After": "60"})


class DatabaseDown(StudioError):
    status, code = 503, "database_unavailable"
    MESSAGE = "the studio cannot reach its database right now; nothing was changed, try again in a few seconds"
    RETRY_AFTER_S = 5

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message, headers={"Retry-After": str(self.RETRY_AFTER_S)})


BUS_DOWN = "bus_unavailable"
BUS_DOWN_MESSAGE = "the studio's event bus (NATS) is unavailable; try again in a few seconds"


def bus_down(message: str = BUS_DOWN_MESSAGE) -> UpstreamUnavailable:
    return UpstreamUnavailable(message, code=BUS_DOWN, headers={"Retry-After": "5"})


def report_database_down(exc: BaseException) -> None:
    """Counted, logged once a minute and alerted (`resource.exhausted` database_unavailable)."""
    SHORTAGES.report(
        "database_unavailable",
        f"{exc}: requests that need it answer 503 database_unavailable and events wait until it is back; "
        "check that the database server runs and STUDIO_DATABASE_URL reaches it",
    )


def report_bus_down(exc: BaseException) -> None:
    SHORTAGES.report(
        BUS_DOWN,
        f"NATS cannot be reached ({exc}): requests that need it answer 503 bus_unavailable until it is back; "
        "check that nats-server runs and STUDIO_NATS_URL reaches it",
    )


def error_response(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": error}).encode(),
        content_type="application/json",
        headers=headers,
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own exceptions (no route, wrong method, body too big) rendered the same way."""
    message = exc.reason if exc.status != 413 else (exc.text or exc.reason)
    if exc.status == 405:
        message = f"method not allowed; allowed: {', '.join(sorted(exc.headers.get('Allow', '').split(',')))}"
    if exc.status == 404:
        message = "no such route"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "location")}
    return error_response(exc.status, {"code": _HTTP_CODES.get(exc.status, "http_error"), "message": message}, headers)


ANTHROPIC_PREFIX = "/v1/messages"
OPENAI_PREFIX = "/v1/"
STUDIO, OPENAI, ANTHROPIC = "studio", "openai", "anthropic"


def dialect(path: str) -> str:
    """The API a path speaks, and so the shape of its errors: Anthropic's, OpenAI's (/v1) or the studio's."""
    if path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/"):
        return ANTHROPIC
    if path.startswith(OPENAI_PREFIX):
        return OPENAI
    return STUDIO


def openai_error_type(status: int) -> str:
    """OpenAI's error `type` for a status (its SDKs pick the exception by status; `type` is what they show)."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def openai_shaped(response: web.Response) -> web.Response:
    """An error response with OpenAI's `type` beside the studio's code and message (kept when already set)."""
    body = json.loads(response.body)  # type: ignore[arg-type]  # always ours: bytes
    if "type" in body["error"]:
        return response
    body["error"]["type"] = openai_error_type(response.status)
    response.body = json.dumps(body).encode()
    return response


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> tuple[int, str]:
    """Anthropic's status and error type for one of ours (our 503s are its 529 `overloaded_error`)."""
    if status == 503:
        status = 529
    return status, _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_shaped(response: web.Response) -> web.Response:
    """An error response rewritten in Anthropic's shape (the studio's fields kept inside `error`)."""
    error = json.loads(response.body)["error"]  # type: ignore[arg-type]  # always ours: bytes
    status, kind = anthropic_error_type(response.status)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    headers.pop("Content-Length", None)
    body = {"type": "error", "error": {**error, "type": kind}}
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json", headers=headers)


def render(request: web.Request, exc: BaseException) -> web.Response | None:
    """The JSON response for an exception raised by a handler (in Anthropic's shape on its API); None if
    it must propagate."""
    response = _render(request, exc)
    if response is None:
        return None
    speaks = dialect(request.path)
    if speaks == ANTHROPIC:
        return anthropic_shaped(response)
    if speaks == OPENAI:
        return openai_shaped(response)
    return response


def _render(request: web.Request, exc: BaseException) -> web.Response | None:
    if isinstance(exc, ClientHungUp):
        log.info("%s %s: %s", request.method, request.path, exc.message)
        return exc.to_response()  # written to nobody, which is fine
    if isinstance(exc, PAYLOAD_ERRORS):  # a function reading the body itself saw the hang-up
        log.info("%s %s: the client hung up before its whole body arrived (%s)", request.method, request.path, exc)
        return ClientHungUp("the client hung up").to_response()
    if isinstance(exc, DatabaseUnavailable):  # counted and logged once a minute, not a traceback a request
        report_database_down(exc)
        return DatabaseDown().to_response()
    if is_bus_outage(exc):
        report_bus_down(exc)
        return bus_down().to_response()
    if isinstance(exc, StudioError):
        if exc.code == BUS_DOWN:
            report_bus_down(exc.__cause__ or exc)
        elif exc.status >= 500 and not isinstance(exc, DiskFull):
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return exc.to_response()
    if isinstance(exc, web.HTTPException):
        return from_http_exception(exc) if exc.status >= 400 else None
    if isinstance(exc, ConnectionResetError | asyncio.CancelledError):  # the client left: nothing to answer
        return None
    if is_disk_full(exc):  # counted and logged once a minute, not a traceback a request
        SHORTAGES.report(
            "disk_full",
            f"writes fail because the disk is full ({type(exc).__name__}: {exc}): free space under the data dir; "
            "until then requests that write answer 503 disk_full",
        )
        return DiskFull().to_response()
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(
        500, {"code": "internal_error", "message": "internal error; the operator can find it in the logs"}
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        response = render(request, exc)
        if response is None:
            raise
        return response


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    if request.content_type not in ("application/json", "") and not request.content_type.endswith("+json"):
        raise BadRequest("send the body as JSON (Content-Type: application/json)", code="unsupported_media_type")
    raw = await request.read()
    if not raw:
        raise BadRequest("the request body is empty; expected a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # nested deeper than Python's parser can follow: no request needs that
        raise BadRequest("the body's JSON is nested too deep", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return body
