"""The PostgreSQL driver behind `Database` (asyncpg): a pool, the writer lock, the same rows.

- Statements arrive in the house style (`?` placeholders) and are translated once each
  (`dialect.numbered`); asyncpg prepares and caches them per connection.
- Rows are asyncpg Records (`row["name"]`, `row[0]`, `keys()`), like sqlite3.Row. NUMERIC results
  (PostgreSQL's type for SUM of integers) come back as int when whole, else float, as in SQLite.
- Write transactions run under the writer lock (`dialect.WRITER_LOCK_SQL`, released at COMMIT or
  ROLLBACK), in process first (an asyncio lock, so a waiting writer holds no pooled connection) then
  across processes and servers. A single write statement outside a transaction is atomic by itself
  and runs at once; reads use the pool freely and never wait for a writer.
- A server that cannot be reached (stopped, restarting, its connections cut, the pool's connection
  gone under a query) raises `DatabaseUnavailable` (`_reachable`), never asyncpg's own error; the pool
  drops the dead connections and opens new ones when the server is back, without a restart.
- Round trips are the cost here (SQLite's are function calls): BEGIN and the lock go in one, and a
  pooled connection goes back without asyncpg's reset query (tests/bench/database_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from studio.runtime.dialect import WRITER_LOCK_SQL, DatabaseUrl, numbered, postgres_ddl, rowcount
from studio.runtime.sql import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Params,
    Row,
    Transaction,
    quote_name,
)

POOL_SIZE = 10
CLOSE_GRACE_S = 5.0
_KINDS = {
    "bigint": "integer",
    "integer": "integer",
    "smallint": "integer",
    "double precision": "real",
    "real": "real",
    "numeric": "real",
    "bytea": "blob",
}


def _decode_numeric(text: str) -> int | float:
    value = decimal.Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


_BEGIN_WRITE = f"BEGIN; {WRITER_LOCK_SQL}"


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset query (a round trip after every query):
    the studio keeps no session state (no LISTEN, SET or session-level locks; its writer lock is
    transaction-level) and always ends its transactions."""

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("numeric", schema="pg_catalog", encoder=str, decoder=_decode_numeric, format="text")


# Server states that mean "not now": shutting down or starting up (57P01-57P03), too many connections.
_NOT_NOW = (
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)

_LOST = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the server cannot be reached now (as opposed to a bad query or a bug)."""
    if isinstance(exc, (asyncpg.PostgresConnectionError, *_NOT_NOW)):  # class 08, 57P0x, 53300
        return True
    if type(exc) in _LOST:  # "connection is closed", "... released back to the pool", a protocol state
        return True  # left behind by a cut connection (InterfaceError's other kinds, such as DataError for a
        # bad argument, are the caller's fault)
    return isinstance(exc, OSError | TimeoutError)  # refused, reset, unresolvable, connect timed out


@contextlib.contextmanager
def _reachable(location: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if unreachable(exc):
            raise DatabaseUnavailable(location, exc) from exc
        raise


def _args(params: Params) -> Iterable[Any]:
    if isinstance(params, dict):
        raise DatabaseError("named parameters are SQLite-only: use ? placeholders")
    return params


class PostgresTransaction(Transaction):
    def __init__(self, conn: asyncpg.Connection, location: str) -> None:
        super().__init__()
        self._conn = conn
        self._location = location

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _reachable(self._location):
            return rowcount(await self._conn.execute(numbered(sql), *_args(params)))

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> int:
        batch = [tuple(_args(r)) for r in rows]
        with _reachable(self._location):
            await self._conn.executemany(numbered(sql), batch)
        return len(batch)  # asyncpg reports no count for a batch: each row is one statement

    async def insert(self, sql: str, params: Params = (), *, key: str = "id") -> int | None:
        with _reachable(self._location):
            value = await self._conn.fetchval(numbered(f"{sql} RETURNING {key}"), *_args(params))
        return None if value is None else int(value)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with _reachable(self._location):
            rows: list[Row] = await self._conn.fetch(numbered(sql), *_args(params))
        return rows


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, target: Path | str | DatabaseUrl) -> None:
        super().__init__(target)
        self.url = target if isinstance(target, DatabaseUrl) else DatabaseUrl.parse(str(target))
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    @property
    def location(self) -> str:
        return self.url.masked()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url.url,
                min_size=0,  # no floor to restore: asyncpg would log a traceback for each try during an outage
                max_size=POOL_SIZE,
                init=_init_connection,
                connection_class=_Connection,
                timeout=10,
            )
            await self._pool.fetchval("SELECT 1")  # reachable now, or one line saying so
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise DatabaseError(
                f"cannot connect to {self.url.masked()}: {exc}; check STUDIO_DATABASE_URL and that the server runs"
            ) from None

    async def close(self) -> None:
        """Close the pool; a connection a task still holds after CLOSE_GRACE_S is cut (as closing
        SQLite's connections would): shutting down never waits on a stuck task."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CLOSE_GRACE_S)
            except TimeoutError:
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseError("the database is not open")
        return self._pool

    def _ddl(self, script: str) -> str:
        return postgres_ddl(script)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            with _reachable(self.location):
                conn = await self.pool.acquire()
            try:
                with _reachable(self.location):
                    await conn.execute(_BEGIN_WRITE)  # one round trip: BEGIN and the writer lock
                try:
                    yield PostgresTransaction(conn, self.location)
                except BaseException:
                    try:
                        await conn.execute("ROLLBACK")
                    except Exception:  # its connection is gone (or unusable): never back into the pool as is
                        conn.terminate()
                    raise
                with _reachable(self.location):
                    await conn.execute("COMMIT")
            finally:
                if not conn.is_closed() and conn.is_in_transaction():  # a ROLLBACK cut short: never pooled so
                    conn.terminate()
                with _reachable(self.location):
                    await self.pool.release(conn)

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One write statement, atomic by itself (its own implicit transaction; rows it changes are
        locked against every transaction that changes them too), so it needs no writer lock."""
        with _reachable(self.location):
            return rowcount(await self.pool.execute(numbered(sql), *_args(params)))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with _reachable(self.location):
            rows: list[Row] = await self.pool.fetch(numbered(sql), *_args(params))
        return rows

    async def tables(self) -> list[str]:
        rows = await self.fetch_all(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [r[0] for r in rows]

    async def columns(self, table: str) -> dict[str, str]:
        rows = await self.fetch_all(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return {r[0]: _KINDS.get(r[1], "text") for r in rows}

    async def after_bulk_load(self, tx: Transaction, tables: Iterable[str]) -> None:
        for table in tables:
            for row in await tx.fetch_all(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ? AND is_identity = 'YES'",
                (table,),
            ):
                column = quote_name(row[0])
                await tx.fetch_all(
                    f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({column}), 0) + 1, false) "
                    f"FROM {quote_name(table)}",
                    (quote_name(table), row[0]),
                )

    async def integrity_check(self) -> str:
        """PostgreSQL checks pages itself; what can be broken is an index left invalid (a failed build)."""
        rows = await self.fetch_all(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
            "AND NOT (i.indisvalid AND i.indisready) ORDER BY c.relname"
        )
        return "ok" if not rows else "invalid indexes: " + ", ".join(r[0] for r in rows)
