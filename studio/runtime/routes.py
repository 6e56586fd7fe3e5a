"""`Route`: everything about one HTTP route, declared once on its handler (`@function.route`).

The gateway builds its route table from these (gateway/routes.py), the OpenAPI document is generated
from them and their types (gateway/openapi.py), and the runtime decodes the request body by the
declared type before the handler runs (studio/runtime/bodies.py). docs/contracts.md shows how to
declare one.

Policy, as the gateway applies it:
- `timeout`: how long the function may take to start answering (504 past it; streams then run as
  long as they need); the request's body must also have arrived within it (408);
- `max_body`: the largest body (None: STUDIO_MAX_BODY_BYTES; a callable: read from the settings),
  refused from `Content-Length` before a byte is read, else counted as it arrives (413);
- who may call it: `operator` closes it to everyone but the operator; `visitor=False` skips the
  visitor cookie (machines such as Stripe or Prometheus have no session; chat answers only a visitor
  it already knows, a signed-in account or a key); `needs_session` refuses a state-changing request
  without an existing visitor session (401: a cookie-less client must not mint a visitor per
  request); `keys` accepts personal API keys (never on account or purchase routes);
- `stream`: its requests count against the per-address stream cap.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from studio.runtime.settings import Settings

KIB = 1024
HttpHandler = Callable[..., Awaitable[web.StreamResponse]]  # (request) or (request, body) when `body` is declared
BodyLimit = int | Callable[["Settings"], int] | None
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")


class RouteTableMismatch(RuntimeError):
    """Two declarations claim the same method and path, or a table disagrees with its functions."""


@dataclass(frozen=True, eq=False)
class Route:
    method: str
    path: str  # an aiohttp path template: `/api/models/{model}`; `{tail:.*}` covers everything below
    function: str
    handler: HttpHandler | None = None
    summary: str = ""
    body: Any = None  # the request body's type (a msgspec Struct), decoded before the handler runs
    query: Any = None  # the query parameters, as a Struct's fields (for the docs; the handler reads them)
    response: Any = None  # the answer's type for the docs, or a media type ("text/event-stream", "text/plain")
    status: int = 200  # the answer's status when all goes well
    error: Any = None  # the error answers' type for the docs (None: the studio's {"error": {"code", "message"}})
    decode: bool = True  # False: `body` is for the docs only, the handler reads the body itself
    errors: tuple[int, ...] = ()  # the 4xx/5xx statuses the handler itself answers (the docs list them)
    answers: tuple[tuple[int, Any], ...] = ()  # other statuses whose body has a type of its own: ((503, Health),)
    timeout: float = 30.0
    max_body: BodyLimit = None
    operator: bool = False
    visitor: bool = True
    needs_session: bool = False
    stream: bool = False
    keys: bool = False
    prefix: str = field(init=False, repr=False)  # the path's literal start: the longest one wins
    pattern: re.Pattern[str] | None = field(init=False, repr=False)  # None: the path is literal

    def __post_init__(self) -> None:
        literal = self.path.split("{", 1)[0]
        object.__setattr__(self, "prefix", literal)
        object.__setattr__(self, "pattern", None if literal == self.path else compile_path(self.path))

    @property
    def methods(self) -> frozenset[str]:
        return frozenset({self.method})

    def body_limit(self, settings: Settings) -> int:
        """The largest body this route accepts under `settings`."""
        limit = self.max_body(settings) if callable(self.max_body) else self.max_body
        return limit or settings.max_body_bytes

    def covers(self, path: str) -> bool:
        if self.pattern is None:
            return path == self.path
        return path.startswith(self.prefix) and self.pattern.fullmatch(path) is not None

    def parameters(self) -> list[str]:
        return [m.group(1) for m in _PARAM.finditer(self.path)]


def compile_path(template: str) -> re.Pattern[str]:
    """The regular expression aiohttp matches `template` with: `{name}` is one segment, `{name:re}` is `re`."""
    out, at = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[at : m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^{}/]+'})")
        at = m.end()
    out.append(re.escape(template[at:]))
    return re.compile("".join(out))
