"""What the gateway refuses before a function sees a request: the hostile visitor's findings (issue 13).

- client address: `studio.runtime.addresses.client_address` (the peer, or the client a trusted proxy
  names; never believed from anyone else);
- per-address limits, the second line behind nginx's and the only one when `up` runs without it:
  open event and chat streams (STUDIO_STREAMS_PER_ADDRESS) and state-changing requests per minute
  (STUDIO_WRITES_PER_ADDRESS_PER_MINUTE), beyond which the answer is 429;
- cross-site requests: a state-changing request a browser marks as coming from another site
  (`Sec-Fetch-Site`, else `Origin`) is refused with 403, so a form on another site cannot make a
  visitor buy or install; machine routes (Stripe's signed webhook) have no browser origin and are exempt;
- sessions: a state-changing request on a route that needs a session, from a client without one, is
  refused with 401 instead of minting a new visitor per request (pages set the cookie on GET).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from gateway.routes import Route
from studio.runtime.errors import Forbidden, TooManyRequests, Unauthorized
from studio.runtime.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STREAM_PATHS = frozenset({"/api/events"})
SAME_SITE = frozenset({"same-origin", "none"})  # `none`: the visitor typed it / a bookmark
MAX_TRACKED = 100_000  # addresses remembered per minute window before the table starts over


def changes_state(request: web.Request) -> bool:
    return request.method not in SAFE_METHODS


def is_stream(request: web.Request, route: Route | None) -> bool:
    return request.path in STREAM_PATHS if route is None else route.stream


class AddressLimits:
    """Open streams and state-changing requests per client address."""

    def __init__(self, streams: int, writes_per_minute: int) -> None:
        self.max_streams = streams
        self.max_writes = writes_per_minute
        self._streams: dict[str, int] = {}
        self._window = 0
        self._writes: dict[str, int] = {}

    def open_stream(self, address: str) -> Callable[[], None]:
        """Count one more open stream for `address` (429 beyond the cap); call the result when it ends."""
        open_now = self._streams.get(address, 0)
        if open_now >= self.max_streams:
            raise TooManyRequests(
                f"{open_now} streams are already open from your address (at most {self.max_streams}); "
                "close one and try again",
                code="too_many_streams",
                headers={"Retry-After": "5"},
            )
        self._streams[address] = open_now + 1

        def release() -> None:
            left = self._streams.get(address, 1) - 1
            if left > 0:
                self._streams[address] = left
            else:
                self._streams.pop(address, None)

        return release

    def count_write(self, address: str) -> None:
        window = int(time.monotonic() // 60)
        if window != self._window or len(self._writes) >= MAX_TRACKED:
            self._window, self._writes = window, {}
        sent = self._writes.get(address, 0) + 1
        self._writes[address] = sent
        if sent > self.max_writes:
            raise TooManyRequests(
                f"more than {self.max_writes} state-changing requests this minute from your address; slow down",
                code="rate_limited",
                headers={"Retry-After": str(60 - int(time.monotonic() % 60))},
            )


def own_origins(request: web.Request, settings: Settings) -> set[str]:
    scheme = "https" if request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https" else "http"
    origins = {f"{scheme}://{request.host}".lower()}
    public = urlsplit(settings.visitor_url)
    origins.add(f"{public.scheme}://{public.netloc}".lower())
    return origins


def refuse_cross_site(request: web.Request, route: Route | None, settings: Settings) -> None:
    """403 for a state-changing request a browser sent from another site."""
    if not changes_state(request) or (route is not None and not route.visitor):
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site.lower() in SAME_SITE:
            return
        raise Forbidden(
            f"cross-site request refused (Sec-Fetch-Site: {site[:20]}): use the studio's own pages",
            code="cross_site",
        )
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not from a browser page (curl, scripts): no ambient cookie was sent on its behalf
    origin = origin.lower()
    if origin in own_origins(request, settings):
        return
    # Behind a proxy that passes `Host: $host`, the port is gone from Host: compare host names then.
    if ":" not in request.host.rsplit("]", 1)[-1] and urlsplit(origin).hostname == request.host.lower().strip("[]"):
        return
    raise Forbidden(
        "cross-site request refused (its Origin is another site): use the studio's own pages", code="cross_site"
    )


def refuse_without_session(request: web.Request, route: Route | None, new_visitor: bool, admin: bool) -> None:
    """401 for a state-changing request on a session route from a client that has no session yet."""
    if route is None or not route.needs_session or not changes_state(request) or admin or not new_visitor:
        return
    raise Unauthorized(
        "no visitor session: open the studio's pages first (they set the session cookie), then try again",
        code="no_session",
    )
