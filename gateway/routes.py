"""The route table: which function answers which URL, and the gateway's policy for each route.

Nothing here is written by hand: every route is declared once, on its handler (`@function.route`
with its policy, studio/runtime/routes.py), and the table is built from the declarations of the
functions the gateway serves: those it hosts (embedded) or those behind it (distributed, their
modules imported, not run). docs/contracts.md shows how to declare one.

Matching follows the declared templates as aiohttp does: a literal path first, then templates by
their longest literal start (`/api/purchases/reconcile` before `/api/purchases/{purchase_id}`); HEAD
is answered by a GET route. A known path with an undeclared method is a 405 whose `Allow` lists the
declared methods (and HEAD with GET); an unknown path is a 404.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import msgspec

from studio.runtime.function import Function
from studio.runtime.routes import KIB, Route, RouteTableMismatch

__all__ = ["GATEWAY_ROUTES", "KIB", "Route", "RouteTable", "RouteTableMismatch", "declared", "studio_routes"]


class GatewayUp(msgspec.Struct):
    status: str
    service: str = ""
    mode: str = ""


def declared(functions: Iterable[Function]) -> tuple[Route, ...]:
    """Every route the functions declare."""
    return tuple(route for fn in functions for route in fn.routes)


@lru_cache(maxsize=1)
def studio_routes() -> tuple[Route, ...]:
    """The routes of every studio function (`functions.NAMES`), as a distributed gateway serves them."""
    from functions import NAMES, load  # the functions sit above this module: imported when first asked

    return declared(load(name) for name in NAMES)


# The gateway's own routes (served by gateway/app.py, never forwarded): declared here for the docs and
# for 405s on their paths; not in the table, whose routes belong to functions.
GATEWAY_ROUTES = (
    Route(
        "GET",
        "/api/events",
        "gateway",
        summary="The visitor's purchase and install events, live (server-sent events; at most "
        "STUDIO_STREAMS_PER_ADDRESS open per client address)",
        response="text/event-stream",
        errors=(429,),
    ),
    Route("GET", "/api/openapi.json", "gateway", summary="This document", response=dict[str, Any], visitor=False),
    Route(
        "GET",
        "/api/docs",
        "gateway",
        summary="This document rendered for people: routes, parameters, schemas",
        response="text/html",
        operator=True,
    ),
    Route(
        "GET",
        "/api/asyncapi.json",
        "gateway",
        summary="The event catalog: an AsyncAPI 3.0 document of every event type on NATS, with its data schema",
        response=dict[str, Any],
        operator=True,
    ),
    Route(
        "GET",
        "/api/docs/events",
        "gateway",
        summary="The event catalog rendered for people: each event type, its subject and fields",
        response="text/html",
        operator=True,
    ),
    Route(
        "POST",
        "/api/operator/session",
        "gateway",
        summary="The operator console's sign-in: the operator's token (or an operator's session) gets a 12-hour "
        "HttpOnly cookie `studio_operator` that counts as the operator's on every route and page (/api/docs, "
        "/health's details)",
        status=204,
        operator=True,
    ),
    Route(
        "DELETE",
        "/api/operator/session",
        "gateway",
        summary="Sign the console out: the operator cookie is cleared",
        status=204,
    ),
    Route(
        "GET",
        "/healthz",
        "gateway",
        summary="The gateway process is up (container health check)",
        response=GatewayUp,
        visitor=False,
    ),
)


class RouteTable:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        by_path: dict[str, dict[str, Route]] = {}
        for route in self.routes:
            methods = by_path.setdefault(route.path, {})
            other = methods.get(route.method)
            if other is not None:
                raise RouteTableMismatch(
                    f"{route.method} {route.path} is declared twice: by {other.function} and by {route.function}"
                )
            methods[route.method] = route
        self._literal = {path: methods for path, methods in by_path.items() if "{" not in path}
        # Templates by their longest literal start first: the most specific declaration wins.
        templated = [(methods, next(iter(methods.values()))) for path, methods in by_path.items() if "{" in path]
        self._templated = sorted(templated, key=lambda pair: len(pair[1].prefix), reverse=True)

    def match(self, path: str, method: str) -> tuple[Route | None, frozenset[str]]:
        """The route for (path, method), else None and the methods the path allows (empty: unknown path)."""
        allowed: set[str] = set()
        methods = self._literal.get(path)
        if methods is not None:
            route = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
            if route is not None:
                return route, frozenset()
            allowed.update(methods)
        for methods, sample in self._templated:
            if sample.covers(path):
                route = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
                if route is not None:
                    return route, frozenset()
                allowed.update(methods)
        if "GET" in allowed:
            allowed.add("HEAD")
        return None, frozenset(allowed)

    def functions(self) -> set[str]:
        return {r.function for r in self.routes}
