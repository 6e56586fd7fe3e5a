"""The accounts store: accounts, sessions, personal API keys, reset links (failed sign-ins: throttle.py).

SQL lives here, portable (SQLite and PostgreSQL): times are ISO-8601 UTC strings computed in Python,
so comparisons are plain string comparisons. Secrets (session ids, keys, reset tokens) are stored as
their SHA-256 only; passwords as Argon2id hashes (`passwords.py`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from studio.runtime.database import Database, Row, Transaction
from studio.runtime.errors import BadRequest

SESSION_IDLE = timedelta(days=30)
SEEN_EVERY = timedelta(hours=1)  # a session's last_seen_at is written at most this often
KEY_USED_EVERY = timedelta(minutes=1)
RESET_LIFE = timedelta(hours=1)
KEY_PREFIX = "sk-studio-"
ROLES = ("user", "operator")
_EMAIL = re.compile(
    r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+"
)


def now() -> datetime:
    return datetime.now(UTC)


def stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalise_email(raw: object) -> str:
    """Trimmed and lower case; a plain address (ASCII, one @, a dotted domain), else 400."""
    if not isinstance(raw, str) or len(raw) > 254:
        raise BadRequest("email must be an e-mail address such as ada@example.com", code="invalid_email")
    email = raw.strip().lower()
    if not _EMAIL.fullmatch(email):
        raise BadRequest("email must be an e-mail address such as ada@example.com", code="invalid_email")
    return email


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    password_hash: str
    role: str
    disabled: bool
    created_at: str

    @classmethod
    def from_row(cls, row: Row) -> Account:
        return cls(
            id=row["id"],
            email=row["email"],
            password_hash=row["password_hash"],
            role=row["role"],
            disabled=bool(row["disabled"]),
            created_at=row["created_at"],
        )

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "role": self.role, "created": self.created_at}


def new_account_id() -> str:
    return "acc_" + secrets.token_hex(10)


def new_session() -> tuple[str, str]:
    """(the cookie's value, its hash for the database)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


class Accounts:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- accounts --------------------------------------------------------------------------------

    async def by_email(self, email: str) -> Account | None:
        row = await self.db.fetch_one("SELECT * FROM accounts WHERE email = ?", (email,))
        return Account.from_row(row) if row else None

    async def get(self, account_id: str) -> Account | None:
        row = await self.db.fetch_one("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return Account.from_row(row) if row else None

    async def emails_of(self, account_ids: list[str]) -> dict[str, str]:
        """{account id: e-mail} of those of `account_ids` that exist."""
        if not account_ids:
            return {}
        marks = ", ".join("?" * len(account_ids))
        rows = await self.db.fetch_all(f"SELECT id, email FROM accounts WHERE id IN ({marks})", tuple(account_ids))
        return {r["id"]: r["email"] for r in rows}

    async def all(self) -> list[Account]:
        return [Account.from_row(r) for r in await self.db.fetch_all("SELECT * FROM accounts ORDER BY created_at")]

    async def count_in(self, tx: Transaction) -> int:
        row = await tx.fetch_one("SELECT COUNT(*) AS n FROM accounts")
        return int(row["n"]) if row else 0

    async def email_taken_in(self, tx: Transaction, email: str) -> bool:
        return await tx.fetch_one("SELECT 1 FROM accounts WHERE email = ?", (email,)) is not None

    async def create(self, tx: Transaction, *, email: str, password_hash: str, role: str) -> Account:
        at = stamp(now())
        account = Account(new_account_id(), email, password_hash, role, False, at)
        await tx.execute(
            "INSERT INTO accounts (id, email, password_hash, role, disabled, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 0, ?, ?)",
            (account.id, email, password_hash, role, at, at),
        )
        return account

    async def set_password(self, tx: Transaction, account_id: str, password_hash: str) -> None:
        await tx.execute(
            "UPDATE accounts SET password_hash = ?, updated_at = ? WHERE id = ?",
            (password_hash, stamp(now()), account_id),
        )

    async def set_role(self, tx: Transaction, account_id: str, role: str) -> None:
        await tx.execute("UPDATE accounts SET role = ?, updated_at = ? WHERE id = ?", (role, stamp(now()), account_id))

    async def set_disabled(self, tx: Transaction, account_id: str, disabled: bool) -> None:
        await tx.execute(
            "UPDATE accounts SET disabled = ?, updated_at = ? WHERE id = ?",
            (1 if disabled else 0, stamp(now()), account_id),
        )

    # -- sessions --------------------------------------------------------------------------------

    async def open_session(self, tx: Transaction, account_id: str) -> str:
        """A new session for the account; returns the cookie's value (only its hash is stored)."""
        token, id_hash = new_session()
        at = stamp(now())
        await tx.execute(
            "INSERT INTO account_sessions (id_hash, account_id, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
            (id_hash, account_id, at, at),
        )
        return token

    async def end_session(self, tx: Transaction, id_hash: str) -> None:
        await tx.execute("DELETE FROM account_sessions WHERE id_hash = ?", (id_hash,))

    async def end_sessions(self, tx: Transaction, account_id: str, *, keep: str | None = None) -> int:
        return await tx.execute(
            "DELETE FROM account_sessions WHERE account_id = ? AND id_hash <> ?", (account_id, keep or "")
        )

    async def session_owner(self, id_hash: str) -> Account | None:
        """The account a live session belongs to (touching its idle clock), or None."""
        row = await self.db.fetch_one(
            "SELECT a.*, s.last_seen_at AS seen FROM account_sessions s JOIN accounts a ON a.id = s.account_id "
            "WHERE s.id_hash = ?",
            (id_hash,),
        )
        if row is None:
            return None
        at = now()
        if row["seen"] < stamp(at - SESSION_IDLE):
            await self.db.execute("DELETE FROM account_sessions WHERE id_hash = ?", (id_hash,))
            return None
        if row["seen"] < stamp(at - SEEN_EVERY):
            await self.db.execute(
                "UPDATE account_sessions SET last_seen_at = ? WHERE id_hash = ?", (stamp(at), id_hash)
            )
        return Account.from_row(row)

    # -- API keys --------------------------------------------------------------------------------

    async def create_key(self, tx: Transaction, account_id: str, name: str) -> tuple[dict[str, Any], str]:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = {
            "id": "key_" + secrets.token_hex(8),
            "name": name,
            "prefix": key[: len(KEY_PREFIX) + 4],
            "created": stamp(now()),
            "last_used": None,
        }
        await tx.execute(
            "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (record["id"], account_id, name, record["prefix"], digest(key), record["created"]),
        )
        return record, key

    async def keys_of(self, account_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            "SELECT id, name, prefix, created_at, last_used_at FROM api_keys "
            "WHERE account_id = ? AND revoked_at IS NULL ORDER BY created_at DESC",
            (account_id,),
        )
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "prefix": r["prefix"],
                "created": r["created_at"],
                "last_used": r["last_used_at"],
            }
            for r in rows
        ]

    async def revoke_key(self, tx: Transaction, account_id: str, key_id: str) -> bool:
        changed = await tx.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND account_id = ? AND revoked_at IS NULL",
            (stamp(now()), key_id, account_id),
        )
        return changed > 0

    async def revoke_keys(self, tx: Transaction, account_id: str) -> int:
        """Revoke every live key of the account (a password reset, or "sign out everywhere" asked to)."""
        return await tx.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
            (stamp(now()), account_id),
        )

    async def key_owner(self, key_hash: str) -> tuple[Account, str] | None:
        """The account and key id of a live key (noting when it was last used), or None."""
        row = await self.db.fetch_one(
            "SELECT a.*, k.id AS key_id, k.last_used_at AS used FROM api_keys k JOIN accounts a ON a.id = k.account_id "
            "WHERE k.key_hash = ? AND k.revoked_at IS NULL",
            (key_hash,),
        )
        if row is None:
            return None
        at = now()
        if row["used"] is None or row["used"] < stamp(at - KEY_USED_EVERY):
            await self.db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (stamp(at), row["key_id"]))
        return Account.from_row(row), row["key_id"]

    # -- password reset links --------------------------------------------------------------------

    async def create_reset(self, tx: Transaction, account_id: str) -> str:
        token = secrets.token_urlsafe(32)
        await tx.execute(
            "INSERT INTO password_resets (token_hash, account_id, expires_at) VALUES (?, ?, ?)",
            (digest(token), account_id, stamp(now() + RESET_LIFE)),
        )
        return token

    async def use_reset(self, tx: Transaction, token: str) -> str | None:
        """The account a valid, unused reset token is for (now used), else None."""
        row = await tx.fetch_one(
            "SELECT account_id FROM password_resets WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
            (digest(token), stamp(now())),
        )
        if row is None:
            return None
        await tx.execute("UPDATE password_resets SET used_at = ? WHERE token_hash = ?", (stamp(now()), digest(token)))
        return row["account_id"]
