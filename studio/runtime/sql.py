"""What both database drivers share: the `Database` and `Transaction` interface, migrations, rows, errors.

The drivers (`studio.runtime.sqlite`, `studio.runtime.postgres`) build on this module; functions import
`studio.runtime.database`, which loads both and lets `Database(target)` pick one.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Protocol

from events.envelope import Event
from studio.runtime.dialect import DatabaseUrl

log = logging.getLogger("studio.db")

_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
Params = Sequence[Any] | dict[str, Any]


class Row(Protocol):
    """A result row: sqlite3.Row or asyncpg.Record, by column name or position."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def keys(self) -> Any: ...


class DatabaseError(RuntimeError):
    pass


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached right now (a transient fault, not a bug): try again shortly."""

    def __init__(self, location: str, cause: BaseException) -> None:
        super().__init__(f"the database at {location} is unavailable ({type(cause).__name__}: {cause})")
        self.location = location


def utcnow(offset_s: float = 0) -> str:
    """Now (or `offset_s` from now), as the ISO text every table stores: 2026-12-02T07:36:04.123Z."""
    at = datetime.now(UTC) + timedelta(seconds=offset_s)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
    "version INTEGER NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
    "PRIMARY KEY (component, version))"
)


OUTBOX_LEASE_S = 30.0  # an outbox row is its writer's relay's to publish for so long (studio.runtime.outbox)


class Transaction:
    """One write transaction; the driver's subclass runs the statements."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.outbox_owner: str | None = None  # whose relay publishes what this transaction publishes

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        raise NotImplementedError

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> int:
        """Run one statement for each row, in one call."""
        raise NotImplementedError

    async def insert(self, sql: str, params: Params = (), *, key: str = "id") -> int | None:
        """Insert one row; returns its generated integer key (`key`, an INTEGER PRIMARY KEY)."""
        raise NotImplementedError

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        raise NotImplementedError

    async def publish(self, event: Event) -> None:
        """Record `event` for publication once (and only if) this transaction commits."""
        await self.publish_many([event])

    async def publish_many(self, events: list[Event]) -> None:
        """`publish` for several events, in one statement."""
        if not events:
            return
        now, owner = utcnow(), self.outbox_owner
        until = utcnow(OUTBOX_LEASE_S) if owner else None
        await self.execute(
            "INSERT INTO outbox (event_id, event_type, payload, created_at, claimed_by, claimed_until) VALUES "
            + ", ".join("(?, ?, ?, ?, ?, ?)" for _ in events),
            [v for e in events for v in (e.id, e.type, e.to_json(), now, owner, until)],
        )
        self.events.extend(events)


class Database:
    """`Database(target)`: a SQLite file (a path, or a sqlite:// URL) or a PostgreSQL server (a URL)."""

    dialect = "sqlite"

    # The drivers by dialect, registered by `studio.runtime.database` (which imports both): the driver
    # modules import this one, so this one cannot import them.
    drivers: ClassVar[dict[str, type[Database]]] = {}

    def __new__(cls, target: Path | str | DatabaseUrl, *args: Any, **kwargs: Any) -> Database:
        if cls is Database:
            url = DatabaseUrl.parse(target) if isinstance(target, str) and "://" in target else target
            dialect = "postgres" if isinstance(url, DatabaseUrl) and url.is_postgres else "sqlite"
            if dialect not in Database.drivers:
                raise DatabaseError(f"no {dialect} driver is loaded: import Database from studio.runtime.database")
            instance: Database = super().__new__(Database.drivers[dialect])
            return instance
        return super().__new__(cls)

    def __init__(self, target: Path | str | DatabaseUrl) -> None:
        self.on_events_committed: list[Callable[[list[Event]], None]] = []
        self.outbox_owner: str | None = None  # this process's outbox relay (set when it starts)

    @property
    def location(self) -> str:
        """Where the database is, for logs and messages: a file path, or a URL without its password."""
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _write(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction holding the writer lock; rolled back if the block raises."""
        raise NotImplementedError

    def _ddl(self, script: str) -> str:
        return script

    # -- migrations ------------------------------------------------------------------------------

    async def migrate(self, components: Iterable[Migrations]) -> list[str]:
        """Apply pending migrations; returns what was applied (`component:NNNN_name`)."""
        applied: list[str] = []
        async with self._write() as tx:
            await tx.execute(self._ddl(SCHEMA_MIGRATIONS))
        for migrations in components:
            for version, name, path in migrations.files():
                if await self._apply(migrations.component, version, name, path):
                    applied.append(f"{migrations.component}:{version:04d}_{name}")
        if applied:
            log.info("applied migrations", extra={"migrations": applied})
        return applied

    async def _apply(self, component: str, version: int, name: str, path: Path) -> bool:
        try:
            async with self._write() as tx:
                if await tx.fetch_one(
                    "SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?", (component, version)
                ):
                    return False
                for statement in split_statements(self._ddl(path.read_text())):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)",
                    (component, version, name, utcnow()),
                )
                return True
        except DatabaseError:
            raise
        except Exception as exc:
            raise DatabaseError(f"migration {component}:{path.name} failed: {exc}") from exc

    # -- access ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._write() as tx:
            tx.outbox_owner = self.outbox_owner
            yield tx
        if tx.events:
            for callback in self.on_events_committed:
                callback(tx.events)

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One write statement in its own transaction."""
        raise NotImplementedError

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        raise NotImplementedError

    async def tables(self) -> list[str]:
        """The studio's tables (schema_migrations included), by name."""
        raise NotImplementedError

    async def columns(self, table: str) -> dict[str, str]:
        """A table's columns in order, each with its kind: integer, real, text or blob."""
        raise NotImplementedError

    async def after_bulk_load(self, tx: Transaction, tables: Iterable[str]) -> None:
        """Rows were copied in with their keys: generated keys continue after them (`db copy`)."""

    async def integrity_check(self) -> str:
        """'ok', or what is wrong with the database's structure."""
        raise NotImplementedError


def quote_name(name: str) -> str:
    """A table or column name quoted for SQL (both engines use double quotes)."""
    return '"' + name.replace('"', '""') + '"'
