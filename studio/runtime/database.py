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

from studio.runtime.postgres import PostgresDatabase
from studio.runtime.sql import (
    RUNTIME_MIGRATIONS,
    SCHEMA_MIGRATIONS,
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Migrations,
    Params,
    Row,
    Transaction,
    quote_name,
    split_statements,
    utcnow,
)
from studio.runtime.sqlite import SqliteDatabase

Database.drivers.update(sqlite=SqliteDatabase, postgres=PostgresDatabase)

__all__ = [
    "RUNTIME_MIGRATIONS",
    "SCHEMA_MIGRATIONS",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "Migrations",
    "Params",
    "PostgresDatabase",
    "Row",
    "SqliteDatabase",
    "Transaction",
    "quote_name",
    "split_statements",
    "utcnow",
]
