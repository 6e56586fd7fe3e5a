"""The SQLite database: one file under the data dir, versioned migrations, an outbox for events.

- One writer connection, used under a lock, for transactions (`BEGIN IMMEDIATE`, so concurrent
  processes serialise instead of failing); one reader connection for queries (WAL lets it read
  while the writer writes). `synchronous=FULL`: a committed purchase survives a power loss.
- Migrations are `NNNN_name.sql` files in a component's `migrations/` folder, applied in order at
  start-up, each in its own transaction, recorded in `schema_migrations` per component.
- `tx.publish(event)` writes the event to the outbox table in the same transaction as the state
  change it describes; the outbox relay (`studio.runtime.outbox`) moves it to JetStream.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from events.envelope import Event

log = logging.getLogger("studio.db")

Row = sqlite3.Row
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class DatabaseError(RuntimeError):
    pass


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Migrations:
    """The migrations of one component (the runtime, or one function), from its folder."""

    component: str
    directory: Path

    def files(self) -> list[tuple[int, str, Path]]:
        out = []
        for path in sorted(self.directory.glob("*.sql")):
            m = _MIGRATION.match(path.name)
            if not m:
                raise DatabaseError(f"migration file {path} is not named NNNN_name.sql")
            out.append((int(m.group(1)), m.group(2), path))
        versions = [v for v, _, _ in out]
        if len(set(versions)) != len(versions):
            raise DatabaseError(f"two migrations of {self.component} share a version number")
        return out


def split_statements(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in current.splitlines()):
        raise DatabaseError(f"unterminated SQL statement: {current.strip()[:80]}")
    return statements


RUNTIME_MIGRATIONS = Migrations("runtime", Path(__file__).parent / "migrations")


async def _run(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
    """Execute one statement and close its cursor (an open cursor can hold a lock)."""
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


class Transaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.events: list[Event] = []

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return await _run(self._conn, sql, params)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any] | dict[str, Any]]) -> int:
        """Run one statement for each row, in one call (one thread hand-off for the lot)."""
        async with self._conn.executemany(sql, rows) as cursor:
            return cursor.rowcount

    async def insert(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int | None:
        async with self._conn.execute(sql, params) as cursor:
            return cursor.lastrowid

    async def fetch_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return rows[0] if rows else None  # type: ignore[index]

    async def fetch_all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def publish(self, event: Event) -> None:
        """Record `event` for publication once (and only if) this transaction commits."""
        await _run(
            self._conn,
            "INSERT INTO outbox (event_id, event_type, payload, created_at) VALUES (?, ?, ?, ?)",
            (event.id, event.type, event.to_json(), utcnow()),
        )
        self.events.append(event)


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.on_events_committed: list[Callable[[list[Event]], None]] = []

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._writer.execute_fetchall("PRAGMA journal_mode=WAL")
        self._reader = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in ("busy_timeout=10000", "synchronous=FULL", "foreign_keys=ON"):
            await conn.execute_fetchall(f"PRAGMA {pragma}")
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise DatabaseError("the database is not open")
        return self._writer

    # -- migrations ------------------------------------------------------------------------------

    async def migrate(self, components: Iterable[Migrations]) -> list[str]:
        """Apply pending migrations; returns what was applied (`component:NNNN_name`)."""
        applied: list[str] = []
        async with self._lock:
            await _run(
                self.writer,
                "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
                "version INTEGER NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
                "PRIMARY KEY (component, version))",
            )
            for migrations in components:
                for version, name, path in migrations.files():
                    if await self._apply(migrations.component, version, name, path):
                        applied.append(f"{migrations.component}:{version:04d}_{name}")
        if applied:
            log.info("applied migrations", extra={"migrations": applied})
        return applied

    async def _apply(self, component: str, version: int, name: str, path: Path) -> bool:
        conn = self.writer
        await _run(conn, "BEGIN IMMEDIATE")
        try:
            rows = await conn.execute_fetchall(
                "SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?", (component, version)
            )
            if rows:
                await _run(conn, "ROLLBACK")
                return False
            for statement in split_statements(path.read_text()):
                await _run(conn, statement)
            await _run(
                conn,
                "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)",
                (component, version, name, utcnow()),
            )
            await _run(conn, "COMMIT")
            return True
        except Exception as exc:
            await _run(conn, "ROLLBACK")
            raise DatabaseError(f"migration {component}:{path.name} failed: {exc}") from exc

    # -- access ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            conn = self.writer
            await _run(conn, "BEGIN IMMEDIATE")
            tx = Transaction(conn)
            try:
                yield tx
            except BaseException:
                await _run(conn, "ROLLBACK")
                raise
            await _run(conn, "COMMIT")
        if tx.events:
            for callback in self.on_events_committed:
                callback(tx.events)

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """One write statement in its own transaction."""
        async with self._lock:
            return await _run(self.writer, sql, params)

    async def fetch_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        if self._reader is None:
            raise DatabaseError("the database is not open")
        return list(await self._reader.execute_fetchall(sql, params))

    async def integrity_check(self) -> str:
        rows = await self.fetch_all("PRAGMA integrity_check")
        return "; ".join(str(r[0]) for r in rows)
