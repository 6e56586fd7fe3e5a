"""The bytes of request bodies this process holds at once, bounded (STUDIO_BODY_BYTES_IN_FLIGHT).

A route's `max_body` bounds one request; it does not bound thirty at once. Thirty 54 MB image chats
took the studio from 88 MB to 1.6 GB and /healthz to 1.8 s (issue 21), each body read whole and decoded
while the others arrived. So every request that carries a body takes a share of one budget before a
byte of it is read: its Content-Length at once, or a chunked body's bytes as they arrive. A request
whose share would pass the budget is answered at once with 503 `request_bodies_full` and Retry-After
(Anthropic's 529 on /v1/messages: its clients retry), in its API's error shape, and its body is never
read. A share is given back when its request ends, however it ends (answered, refused, the client
hung up): the body, its decoded value and the answer built from it live until then.

A body bigger than the whole budget still passes while no other body is held, so the largest body a
route accepts always gets through on a quiet studio. A declared body of SMALL bytes or less (a sign-in,
a purchase, a Stripe event, a short chat) takes no share and is never refused here: a few clients
holding the budget with large bodies must not lock everyone out of the forms (the per-address limits
bound how many small ones one client sends). In the one-process studio this is the whole
studio's budget; in distributed mode each gateway's, which bounds what it sends its functions at once.
tests/bench/body_bench.py measures RSS and /healthz under thirty concurrent large bodies.
"""

from __future__ import annotations

from aiohttp import web

from studio.runtime.errors import UpstreamUnavailable
from studio.runtime.shortages import SHORTAGES

RETRY_AFTER_S = 5
SMALL = 64 * 1024  # a declared body this size or smaller takes no share
FULL = "request_bodies_full"
MIB = 1024 * 1024


class BodyShare:
    """One request's share of the budget: `grow` as a chunked body arrives, `release` once it ends."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: BodyBudget, held: int) -> None:
        self.budget = budget
        self.held = held

    def grow(self, n: int) -> None:
        self.budget.grow(self, n)

    def release(self) -> None:
        budget = self.budget
        budget.held -= self.held
        self.held = 0
        if budget.short and budget.held == 0:  # every body is in: the shortage (and its alert) ends
            budget.short = False
            SHORTAGES.recovered(FULL, "no request body is being received any more: room for large bodies again")


class BodyBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes, over every request's share
        self.refused = 0  # requests refused since the process started
        self.short = False  # refused one since the budget was last empty

    def take(self, request: web.Request) -> BodyShare | None:
        """A share for `request`'s body (None when it has none), or the 503 when the budget is spent."""
        length = request.content_length
        if (length is None and not request.body_exists) or (length is not None and length <= SMALL):
            return None
        n = length or 0
        self._check(n, 0)
        self.held += n
        return BodyShare(self, n)

    def grow(self, share: BodyShare, n: int) -> None:
        self._check(n, share.held)
        self.held += n
        share.held += n

    def _check(self, n: int, own: int) -> None:
        others = self.held - own
        if others and self.held + n > self.limit:
            self.refused += 1
            self.short = True
            SHORTAGES.report(
                FULL,
                f"request bodies of {self.held / MIB:.1f} MiB are being received, and this process holds at most "
                f"{self.limit / MIB:.0f} MiB at once (STUDIO_BODY_BYTES_IN_FLIGHT): more get 503 until they end "
                f"({self.refused} refused so far)",
            )
            raise UpstreamUnavailable(
                "the studio is receiving other large requests right now; send this one again in a few seconds",
                code=FULL,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )


BODY_SHARE_KEY: web.RequestKey[BodyShare | None] = web.RequestKey("body_share")
