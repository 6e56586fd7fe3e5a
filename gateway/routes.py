"""The route table: which function answers which URL, and the gateway's policy for each route.

Longest prefix wins; a prefix matches the path itself and anything below it (`/api/models` matches
`/api/models/x`, not `/api/modelsx`). `methods=None` means any method. `timeout` is how long the
function may take to start answering (streams then run as long as they need); `max_body` caps the
request body; `admin` closes the route to everyone but the operator; `visitor=False` skips the
visitor cookie (machines such as Stripe or Prometheus have no session).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    prefix: str
    function: str
    methods: frozenset[str] | None = None
    timeout: float = 30.0
    max_body: int | None = None  # None: STUDIO_MAX_BODY_BYTES
    admin: bool = False
    visitor: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "_below", self.prefix.rstrip("/") + "/")

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self._below)


def methods(*names: str) -> frozenset[str]:
    return frozenset(names)


KIB = 1024

ROUTES: tuple[Route, ...] = (
    Route("/api/models", "purchase", methods("GET")),
    Route("/api/models/purchase", "purchase", methods("POST"), timeout=30, max_body=4 * KIB),
    Route("/api/models/install", "purchase", methods("POST"), max_body=4 * KIB),
    Route("/api/models", "install", methods("DELETE"), timeout=60, admin=True),
    Route("/api/purchases", "purchase", methods("GET")),
    Route("/api/purchases", "purchase", methods("POST"), timeout=30, max_body=4 * KIB, admin=True),  # refunds
    Route("/api/purchases/reconcile", "purchase", methods("POST"), timeout=120, max_body=4 * KIB, admin=True),
    Route("/api/overview", "purchase", methods("GET"), admin=True),
    Route("/api/operator", "purchase", methods("GET")),
    Route("/api/catalog", "purchase", methods("POST", "PATCH", "DELETE"), max_body=16 * KIB, admin=True),
    Route("/api/webhooks/stripe", "webhook", methods("POST"), timeout=10, max_body=64 * KIB, visitor=False),
    Route("/api/chat", "chat", methods("POST"), timeout=150, max_body=512 * KIB),
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
