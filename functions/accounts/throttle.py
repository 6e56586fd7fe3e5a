"""Sign-in throttling that slows an attacker without locking the owner out.

Every wrong password (at sign-in, or as the current password of a password change) is recorded with
the account's e-mail and the client's address. Two limits apply, each an exponential backoff counted
over the last 15 minutes (`WINDOW`), never a lock-out:

- per address: after `FREE_PER_ADDRESS` failures from one address (whatever e-mails it tried), its
  next attempt waits 1 s after its latest failure, then 2, 4, 8 ... up to `MAX_WAIT` (15 minutes);
- per account: after `FREE_PER_ACCOUNT` failures on one e-mail (from any addresses), attempts on it
  wait the same way after its latest failure, but only from addresses that have failed recently
  themselves. An address with no failures in the window is never held back by the account's count:
  the owner signing in from home still gets in while the account is under attack from elsewhere,
  and each attacking address gets one guess before it is slowed with the rest.

A success forgets the failures of that e-mail from that address (the owner's own typos), not the
others': an attack on the account stays on record. Times are ISO-8601 UTC strings (portable SQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from functions.accounts.store import now, stamp
from studio.runtime.database import Database, Transaction
from studio.runtime.errors import TooManyRequests

WINDOW = timedelta(minutes=15)
FREE_PER_ADDRESS = 5
FREE_PER_ACCOUNT = 5
MAX_WAIT = WINDOW


def backoff(failures: int, free: int) -> timedelta:
    """0 while `failures` < `free`, then 1 s, 2 s, 4 s ... at most `MAX_WAIT`."""
    if failures < free:
        return timedelta(0)
    return min(MAX_WAIT, timedelta(seconds=2 ** min(failures - free, 20)))


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Attempt:
    """Who is trying which account: the normalised e-mail and the client's address."""

    email: str
    address: str


class SignInThrottle:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def refuse_while_limited(self, attempt: Attempt) -> None:
        """429 with Retry-After while either backoff holds this attempt back."""
        at = now()
        since = stamp(at - WINDOW)
        by_address = await self.db.fetch_one(
            "SELECT COUNT(*) AS n, MAX(failed_at) AS latest FROM sign_in_failures WHERE address = ? AND failed_at >= ?",
            (attempt.address, since),
        )
        free_at = at
        address_failures = int(by_address["n"]) if by_address else 0
        if address_failures and by_address is not None:
            free_at = max(free_at, _parse(by_address["latest"]) + backoff(address_failures, FREE_PER_ADDRESS))
            by_account = await self.db.fetch_one(
                "SELECT COUNT(*) AS n, MAX(failed_at) AS latest FROM sign_in_failures "
                "WHERE email = ? AND failed_at >= ?",
                (attempt.email, since),
            )
            if by_account is not None and by_account["n"]:
                free_at = max(free_at, _parse(by_account["latest"]) + backoff(int(by_account["n"]), FREE_PER_ACCOUNT))
        if free_at > at:
            wait = max(1, int((free_at - at).total_seconds() + 0.999))
            raise TooManyRequests(
                f"too many failed attempts from your address or on this account; try again in {wait} s "
                "(or reset the password by e-mail)",
                code="too_many_attempts",
                headers={"Retry-After": str(wait)},
            )

    async def record_failure(self, attempt: Attempt) -> None:
        at = now()
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO sign_in_failures (email, address, failed_at) VALUES (?, ?, ?)",
                (attempt.email, attempt.address, stamp(at)),
            )
            await tx.execute("DELETE FROM sign_in_failures WHERE failed_at < ?", (stamp(at - WINDOW),))

    async def forget(self, tx: Transaction, attempt: Attempt) -> None:
        """A success: this address's failures on this e-mail are forgiven (others' stay)."""
        await tx.execute(
            "DELETE FROM sign_in_failures WHERE email = ? AND address = ?", (attempt.email, attempt.address)
        )
