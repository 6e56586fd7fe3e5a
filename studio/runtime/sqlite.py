"""The SQLite driver (the default): one writer connection under a lock, one reader (`studio.runtime.database`)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiosqlite

from studio.runtime.dialect import DatabaseUrl
from studio.runtime.sql import Database, DatabaseError, DatabaseUnavailable, Params, Row, Transaction, quote_name

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


# SQLite result codes (primary, the low byte) that mean "the file cannot be used right now":
# BUSY/LOCKED (another process held the lock past busy_timeout), IOERR, CANTOPEN.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 14})


def _sqlite_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (
        _SQLITE_UNAVAILABLE
    )


def _executed(conn: sqlite3.Connection, sql: str, params: Params, lastrowid: bool = False) -> int | None:
    cursor = conn.execute(sql, params)
    try:
        return cursor.lastrowid if lastrowid else cursor.rowcount
    finally:
        cursor.close()


async def _run(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> int:
    """Execute one statement and close its cursor (an open cursor can hold a lock), in one hand-off to
    aiosqlite's thread, not two (execute, then close): each costs ~0.1-0.2 ms (docs/performance.md), and
    a chat admission is several statements (tests/bench/relay_bench.py)."""
    return await conn._execute(_executed, conn._conn, sql, params) or 0  # type: ignore[no-untyped-call]


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
        conn = self._conn
        result: int | None = await conn._execute(_executed, conn._conn, sql, params, True)  # type: ignore[no-untyped-call]
        return result

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return rows[0] if rows else None  # type: ignore[index]

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))


def private(path: Path) -> None:
    """The database file readable by its owner only (0600), created so if new: it holds password hashes,
    e-mails and purchases. SQLite gives its -wal and -shm files the database file's permissions."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with suppress(FileNotFoundError):
            if existing.stat().st_mode & 0o077:
                os.chmod(existing, 0o600)


class SqliteDatabase(Database):
    def __init__(self, target: Path | str | DatabaseUrl, *, busy_timeout_s: float = 10.0) -> None:
        super().__init__(target)
        self.busy_timeout_s = busy_timeout_s  # how long a write waits for another process's lock, then unavailable
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
        private(self.path)
        self._writer = await self._connect()
        await self._writer.execute_fetchall("PRAGMA journal_mode=WAL")
        self._reader = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in (f"busy_timeout={round(self.busy_timeout_s * 1000)}", "synchronous=FULL", "foreign_keys=ON"):
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
            tx = SqliteTransaction(conn)
            try:
                # Inside the try: a caller cancelled while BEGIN is queued (a client hanging up as its answer's
                # usage is written) still has it run by aiosqlite's thread, and must not leave it open.
                await _run(conn, "BEGIN IMMEDIATE")
                yield tx
            except BaseException as exc:
                with suppress(sqlite3.Error):  # "no transaction is active": BEGIN failed, or a statement ended it
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
