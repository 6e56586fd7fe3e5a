"""The route table: which function answers which URL, and the gateway's policy for each route.

Longest prefix wins; a prefix matches the path itself and anything below it (`/api/models` matches
`/api/models/x`, not `/api/modelsx`). `methods=None` means any method. `timeout` is how long the
function may take to start answering (streams then run as long as they need); `max_body` caps the
request body; `admin` closes the route to everyone but the operator; `visitor=False` skips the
visitor cookie (machines such as Stripe or Prometheus have no session; chat answers only a visitor it
already knows, a signed-in account or a key); `needs_session` refuses a state-changing request without
an existing visitor session (401: a cookie-less client must not mint a visitor per request); `stream`
counts the route's requests against the per-address stream cap; `keys` accepts personal API keys
(never on account or purchase routes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from studio.runtime.settings import Settings


@dataclass(frozen=True)
class Route:
    prefix: str
    function: str
    methods: frozenset[str] | None = None
    timeout: float = 30.0
    max_body: int | Callable[[Settings], int] | None = None  # None: STUDIO_MAX_BODY_BYTES; callable: from settings
    admin: bool = False
    visitor: bool = True
    needs_session: bool = False
    stream: bool = False
    keys: bool = False  # personal API keys (`Bearer sk-studio-...`) are accepted here
    _below: str = field(init=False, repr=False, compare=False)  # prefix + "/", computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "_below", self.prefix.rstrip("/") + "/")

    def body_limit(self, settings: Settings) -> int:
        """The largest body this route accepts under `settings`."""
        limit = self.max_body(settings) if callable(self.max_body) else self.max_body
        return limit or settings.max_body_bytes

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self._below)


def methods(*names: str) -> frozenset[str]:
    return frozenset(names)


KIB = 1024

ROUTES: tuple[Route, ...] = (
    Route("/api/models", "purchase", methods("GET")),
    Route("/api/models/purchase", "purchase", methods("POST"), timeout=30, max_body=4 * KIB, needs_session=True),
    Route("/api/models/install", "install", methods("POST"), max_body=4 * KIB, needs_session=True),
    Route("/api/models", "install", methods("DELETE"), timeout=60, admin=True),
    Route("/api/purchases", "purchase", methods("GET")),
    Route("/api/purchases", "purchase", methods("POST"), timeout=30, max_body=4 * KIB, admin=True),  # refunds
    Route("/api/purchases/reconcile", "purchase", methods("POST"), timeout=120, max_body=4 * KIB, admin=True),
    Route("/api/overview", "purchase", methods("GET"), admin=True),
    Route("/api/operator", "purchase", methods("GET")),
    Route("/api/catalog", "purchase", methods("POST", "PATCH", "DELETE"), max_body=16 * KIB, admin=True),
    Route("/api/webhooks/stripe", "webhook", methods("POST"), timeout=10, max_body=64 * KIB, visitor=False),
    Route(
        "/api/chat",
        "chat",
        methods("POST"),
        timeout=150,
        max_body=lambda s: s.chat_max_body_bytes,  # images
        visitor=False,
        keys=True,
        stream=True,
    ),
    Route("/v1/models", "chat", methods("GET"), timeout=10, visitor=False, keys=True),
    Route(
        "/v1/chat/completions",
        "chat",
        methods("POST"),
        timeout=150,
        max_body=lambda s: s.chat_max_body_bytes,  # images
        visitor=False,
        keys=True,
        stream=True,
    ),
    Route(  # Anthropic's Messages API, and /v1/messages/count_tokens below it
        "/v1/messages",
        "chat",
        methods("POST"),
        timeout=150,
        max_body=lambda s: s.chat_max_body_bytes,  # images
        visitor=False,
        keys=True,
        stream=True,
    ),
    Route(
        "/v1/completions",
        "chat",
        methods("POST"),
        timeout=150,
        max_body=lambda s: s.chat_max_body_bytes,
        visitor=False,
        keys=True,
        stream=True,
    ),
    Route(
        "/v1/responses",
        "chat",
        methods("POST"),
        timeout=150,
        max_body=lambda s: s.chat_max_body_bytes,  # images
        visitor=False,
        keys=True,
        stream=True,
    ),
    Route(
        "/v1/embeddings",
        "chat",
        methods("POST"),
        timeout=150,
        max_body=lambda s: s.chat_max_body_bytes,
        visitor=False,
        keys=True,
    ),
    Route("/api/auth", "accounts", methods("GET", "POST"), timeout=10, max_body=8 * KIB),
    Route("/api/account", "accounts", methods("GET", "POST", "DELETE"), timeout=10, max_body=8 * KIB),
    Route("/api/account/usage", "chat", methods("GET"), timeout=10, visitor=False),
    Route("/health", "health", methods("GET", "HEAD"), timeout=10, visitor=False),
    Route("/metrics", "monitor", methods("GET"), timeout=10, admin=True, visitor=False),
    Route("/api/monitor", "monitor", methods("GET"), timeout=10, admin=True),
    Route("/api/monitor/dead-letters", "monitor", methods("GET", "POST"), timeout=30, max_body=4 * KIB, admin=True),
)


class RouteTable:
    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        # Longest prefix first, so the first covering route with the method is the answer.
        self.routes = tuple(sorted(routes, key=lambda r: len(r.prefix), reverse=True))

    def match(self, path: str, method: str) -> tuple[Route | None, frozenset[str]]:
        """The route for (path, method), else None and the methods the path would allow."""
        allowed: set[str] = set()
        for route in self.routes:
            if route.covers(path):
                if route.methods is None or method in route.methods or (method == "HEAD" and "GET" in route.methods):
                    return route, frozenset()
                allowed |= route.methods
        return None, frozenset(allowed)

    def functions(self) -> set[str]:
        return {r.function for r in self.routes}
