"""Passwords: Argon2id through argon2-cffi with OWASP's recommended parameters (19 MiB, 2 passes, one
lane: tens of milliseconds on one core, and little memory per concurrent sign-in), checked off the
event loop. A missing account is checked against a dummy hash, so a wrong e-mail costs the same time as
a wrong password and the answer's timing says nothing about which accounts exist.
"""

from __future__ import annotations

import asyncio
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from studio.runtime.errors import BadRequest

MIN_LENGTH = 10
MAX_LENGTH = 1024  # Argon2 takes any length; a cap keeps a huge body from costing a huge hash

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)  # OWASP's Argon2id minimum


@cache
def _dummy() -> str:
    """A hash to check a missing account's password against, made once a process: by `prepare()` when the accounts
    function starts (so the first sign-in of a missing account costs what any does), not at import (~20 ms of CPU
    in every process that imports this module, each CLI command among them)."""
    return _hasher.hash("not the password of anybody; hashed so a missing account costs the same")


async def prepare() -> None:
    await asyncio.to_thread(_dummy)


def check_strength(password: object, email: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise BadRequest(f"the password must be at least {MIN_LENGTH} characters long", code="weak_password")
    if len(password) > MAX_LENGTH:
        raise BadRequest(f"the password must be at most {MAX_LENGTH} characters long", code="invalid_password")
    if password.strip().lower() == email:
        raise BadRequest("the password must not be your e-mail address", code="weak_password")
    return password


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _dummy(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored`; with `stored` None, as slow as a real check, and False."""
    return await asyncio.to_thread(_verify, stored, password[:MAX_LENGTH])
