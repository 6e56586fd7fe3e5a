"""The database: one layer, two drivers (SQLite, PostgreSQL), versioned migrations, an outbox for events.

`STUDIO_DATABASE_URL` picks the driver (`studio.runtime.dialect`); functions see only `Database` and
`Transaction` and write portable SQL with `?` placeholders. Rows answer `row["name"]` and `row[0]`.

- SQLite (the default, nothing to install): one writer connection, used under a lock, for transactions
  (`BEGIN IMMEDIATE`, so concurrent processes serialise instead of failing); one reader connection for
  queries (WAL lets it read while the writer writes). `synchronous=FULL`: a committed purchase
  survives a power loss.
- PostgreSQL (`studio.runtime.postgres`): a connection pool; write transactions take the writer lock
  (an advisory lock) so the guarantees above hold across processes and servers; reads run in parallel.
- Migrations are `NNNN_name.sql` files in a component's `migrations/` folder, the same files for both
  engines, applied in order at start-up, each in its own transaction, recorded in `schema_migrations`
  per component.
- `tx.publish(event)` writes the event to the outbox table in the same transaction as the state
  change it describes; the outbox relay (`studio.runtime.outbox`) moves it to JetStream.
- A database the studio cannot reach (PostgreSQL stopped or restarting, its connections cut; a SQLite
  file that cannot be opened, read or locked in time) raises `DatabaseUnavailable`, whatever the driver
  said: callers answer 503 `database_unavailable` and retry, they never see the driver's own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

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


# SQLite result codes (primary, the low byte) that mean "the file cannot be used right now":
# BUSY/LOCKED (another process held the lock past busy_timeout), IOERR, CANTOPEN.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 14})


def _sqlite_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (
        _SQLITE_UNAVAILABLE
    )


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
        owner = self.outbox_owner
        await self.execute(
            "INSERT INTO outbox (event_id, event_type, payload, created_at, claimed_by, claimed_until) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (event.id, event.type, event.to_json(), utcnow(), owner, utcnow(OUTBOX_LEASE_S) if owner else None),
        )
        self.events.append(event)


class Database:
    """`Database(target)`: a SQLite file (a path, or a sqlite:// URL) or a PostgreSQL server (a URL)."""

    dialect = "sqlite"

    def __new__(cls, target: Path | str | DatabaseUrl, *args: Any, **kwargs: Any) -> Database:
        if cls is Database:
            url = DatabaseUrl.parse(target) if isinstance(target, str) and "://" in target else target
            if isinstance(url, DatabaseUrl) and url.is_postgres:
                from studio.runtime.postgres import PostgresDatabase

                return super().__new__(PostgresDatabase)
            return super().__new__(SqliteDatabase)
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


# -- SQLite ----------------------------------------------------------------------------------------


def _affinity(declared: str) -> str:
    """SQLite's type affinity rules (sqlite.org/datatype3.html, 3.1), in our four kinds."""
    t = declared.upper()
    if "INT" in t:
        return "integer"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in t or not t:
        return "blob"
    return "real"


async def _run(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> int:
    """Execute one statement and close its cursor (an open cursor can hold a lock)."""
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


class SqliteTransaction(Transaction):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await _run(self._conn, sql, params)

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> int:
        """One thread hand-off for the lot."""
        async with self._conn.executemany(sql, rows) as cursor:
            return cursor.rowcount

    async def insert(self, sql: str, params: Params = (), *, key: str = "id") -> int | None:
        async with self._conn.execute(sql, params) as cursor:
            return cursor.lastrowid

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return rows[0] if rows else None  # type: ignore[index]

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))


class SqliteDatabase(Database):
    def __init__(self, target: Path | str | DatabaseUrl) -> None:
        super().__init__(target)
        if isinstance(target, DatabaseUrl):
            target = target.sqlite_path(Path.cwd())
        elif isinstance(target, str) and "://" in target:
            target = DatabaseUrl.parse(target).sqlite_path(Path.cwd())
        self.path = Path(target)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def location(self) -> str:
        return str(self.path)

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

    @asynccontextmanager
    async def _unavailable(self) -> AsyncIterator[None]:
        """The driver's "cannot use the file now" errors as `DatabaseUnavailable`."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _sqlite_unavailable(exc):
                raise DatabaseUnavailable(self.location, exc) from exc
            raise

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            conn = self.writer
            async with self._unavailable():
                await _run(conn, "BEGIN IMMEDIATE")
            tx = SqliteTransaction(conn)
            try:
                yield tx
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):  # (a failed statement may have ended it already)
                    await _run(conn, "ROLLBACK")
                if _sqlite_unavailable(exc):
                    raise DatabaseUnavailable(self.location, exc) from exc
                raise
            async with self._unavailable():
                await _run(conn, "COMMIT")

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock, self._unavailable():
            return await _run(self.writer, sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        if self._reader is None:
            raise DatabaseError("the database is not open")
        async with self._unavailable():
            return list(await self._reader.execute_fetchall(sql, params))

    async def tables(self) -> list[str]:
        rows = await self.fetch_all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        return [r[0] for r in rows]

    async def columns(self, table: str) -> dict[str, str]:
        rows = await self.fetch_all(f"PRAGMA table_info({quote_name(table)})")
        return {r["name"]: _affinity(r["type"]) for r in rows}

    async def integrity_check(self) -> str:
        rows = await self.fetch_all("PRAGMA integrity_check")
        return "; ".join(str(r[0]) for r in rows)
