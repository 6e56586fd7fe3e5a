"""Signed-in sessions and personal API keys, as the gateway sees them: verified once, then cached.

The accounts function owns sessions and keys; the gateway asks it (`credentials.resolve`, over NATS,
with the secret's SHA-256, never the secret) the first time it sees one, and keeps the answer. A
cached check is one dict lookup and a clock read (tests/bench/accounts_bench.py), so every request can
be authenticated.

Revocation is immediate: the accounts function answers a change (logout, revoked key, password,
role, disabled) with an `X-Studio-Evict` header that this replica acts on before the response leaves,
and publishes `account.access_changed`, on which every replica forgets that account's entries. A
replica cut off from NATS meanwhile re-checks every entry after `RECHECK_S` anyway; a failed answer
is cached briefly too, so a flood of bad keys costs one query each, not one per request.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from events.bus import Bus, BusUnavailable
from events.catalog import AccountAccessChanged
from studio.runtime.errors import UpstreamUnavailable

RECHECK_S = 60.0
MISS_S = 5.0  # how long an unknown session or key stays known as unknown
MAX_ENTRIES = 50_000
KEY_PREFIX = "sk-studio-"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who a session or key belongs to (`account_id` None: nobody, it is unknown or ended)."""

    account_id: str | None
    role: str | None = None
    email: str | None = None
    key_id: str | None = None
    session_hash: str | None = None
    checked_at: float = 0.0


NOBODY = Holder(None)


class Credentials:
    def __init__(self, bus: Bus | None) -> None:
        self.bus = bus
        self._cache: dict[str, Holder] = {}  # the secret (cookie value or key) -> holder
        self.queries = 0

    async def start(self) -> None:
        if self.bus is not None:
            await self.bus.listen(AccountAccessChanged.TYPE, self._on_change)

    async def _on_change(self, event) -> None:
        self.forget(event.data.get("account_id", ""))

    def forget(self, account_id: str) -> None:
        """Drop every cached entry of this account (and every known-unknown one: cheap to re-learn)."""
        if account_id:
            for secret in [s for s, h in self._cache.items() if h.account_id in (account_id, None)]:
                del self._cache[secret]

    async def session(self, token: str) -> Holder:
        return await self._holder(token, "session")

    async def key(self, token: str) -> Holder:
        return await self._holder(token, "key")

    async def _holder(self, secret: str, kind: str) -> Holder:
        held = self._cache.get(secret)
        clock = time.monotonic()
        if held is not None and clock - held.checked_at < (RECHECK_S if held.account_id else MISS_S):
            return held
        hashed = hashlib.sha256(secret.encode()).hexdigest()
        if self.bus is None:
            return NOBODY
        try:
            self.queries += 1
            answer = await self.bus.query("credentials.resolve", {kind: hashed})
        except BusUnavailable:
            raise UpstreamUnavailable(
                "accounts cannot be checked right now (the accounts function does not answer); try again shortly",
                code="accounts_unavailable",
                headers={"Retry-After": "5"},
            ) from None
        if answer.get("account_id"):
            held = Holder(
                answer["account_id"],
                role=answer.get("role"),
                email=answer.get("email"),
                key_id=answer.get("key_id"),
                session_hash=hashed if kind == "session" else None,
                checked_at=clock,
            )
        else:
            held = Holder(None, checked_at=clock)
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[secret] = held
        return held
