"""`localai-studio db copy --from URL --to URL [--overwrite]`: the studio's data into another database.

The way from SQLite to PostgreSQL (README, "PostgreSQL"), and back. Stop the studio first; then:

1. the target is migrated to the source's schema (the same migrations, the same versions: a source an
   older studio left behind is refused until the studio has started on it once);
2. a target that holds rows is refused unless `--overwrite` (which empties it first);
3. every table is copied in ONE transaction on the target, while the source is held in a write
   transaction (nothing changes under the copy); values are converted to the target's column types;
4. before that transaction commits, the row count of every table and the ownership records (who owns
   which model: purchases, chat_ownership) are compared with the source; any difference rolls it all
   back. Generated keys (the outbox's sequence) continue after the copied rows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.runtime.database import RUNTIME_MIGRATIONS, Database, DatabaseError, Migrations, Transaction, quote_name
from studio.runtime.dialect import DatabaseUrl, DatabaseUrlError

# Tables other tables refer to (FOREIGN KEY): filled first, emptied last.
PARENTS_FIRST = ("accounts",)
# Who owns what: compared row by row between source and target, not only counted.
OWNERSHIP = {
    "purchases": "id, user_id, model, status, suspended_at",
    "chat_ownership": "purchase_id, user_id, model, revoked",
}
BATCH = 5000


class CopyError(RuntimeError):
    """The copy cannot go on (nothing was changed); the message says what to do."""


@dataclass
class CopyReport:
    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)
    ownership: dict[str, int] = field(default_factory=dict)
    migrated: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)


def all_migrations() -> dict[str, Migrations]:
    """Every component's migrations, by component (the runtime's and each function's)."""
    import functions

    out = {RUNTIME_MIGRATIONS.component: RUNTIME_MIGRATIONS}
    for name in functions.NAMES:
        m = functions.load(name).migrations
        if m is not None:
            out[m.component] = m
    return out


def open_target(raw: str) -> Database:
    """A `--from`/`--to` argument: a sqlite:// or postgresql:// URL, or a path to a SQLite file."""
    try:
        url = DatabaseUrl.parse(raw) if "://" in raw else None
    except DatabaseUrlError as exc:
        raise CopyError(f"{raw!r}: {exc}") from None
    if url is None:
        return Database(Path(raw))
    return Database(url.sqlite_path(Path.cwd()) if not url.is_postgres else url)


def _convert(value: Any, kind: str) -> Any:
    """A source value as the target column's type (SQLite is lenient; PostgreSQL is not)."""
    if value is None:
        return None
    if kind == "integer":
        if isinstance(value, float) and not value.is_integer():
            raise CopyError(f"{value!r} in an INTEGER column has a fraction")
        return int(value)
    if kind == "real":
        return float(value)
    if kind == "blob":
        return value.encode() if isinstance(value, str) else bytes(value)
    return bytes(value).decode() if isinstance(value, bytes | bytearray | memoryview) else str(value)


async def _applied(db: Database) -> dict[str, set[int]]:
    if "schema_migrations" not in await db.tables():
        return {}
    out: dict[str, set[int]] = {}
    for row in await db.fetch_all("SELECT component, version FROM schema_migrations"):
        out.setdefault(row[0], set()).add(int(row[1]))
    return out


async def _count(db: Database | Transaction, table: str) -> int:
    row = await db.fetch_one(f"SELECT COUNT(*) FROM {quote_name(table)}")
    return int(row[0]) if row else 0


async def _ownership(db: Database | Transaction, table: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch_all(f"SELECT {OWNERSHIP[table]} FROM {quote_name(table)}")
    return sorted((tuple(r) for r in rows), key=repr)


async def copy_database(
    source: Database, target: Database, *, overwrite: bool = False, progress: Callable[[str], None] = print
) -> CopyReport:
    report = CopyReport(source.location, target.location)
    applied = await _applied(source)
    if not applied:
        raise CopyError(f"{source.location} holds no studio data (no schema_migrations table): check --from")
    known = all_migrations()
    unknown = sorted(set(applied) - set(known))
    if unknown:
        raise CopyError(f"the source has tables of components this studio does not know ({', '.join(unknown)})")
    for component, versions in applied.items():
        have = {v for v, _, _ in known[component].files()}
        if versions != have:
            raise CopyError(
                f"the source's {component} tables are at migrations {sorted(versions)}, this studio's at "
                f"{sorted(have)}: start this version of the studio on the source once (it migrates at start), "
                "stop it, and copy again"
            )
    existing = set(await target.tables()) - {"schema_migrations"}
    filled = {t: n for t in sorted(existing) if (n := await _count(target, t))}
    if filled and not overwrite:  # checked before anything is created in it
        listed = ", ".join(f"{t} ({n} rows)" for t, n in filled.items())
        raise CopyError(f"the target is not empty: {listed}; pass --overwrite to replace its data")
    order = [RUNTIME_MIGRATIONS.component, *sorted(c for c in applied if c != RUNTIME_MIGRATIONS.component)]
    report.migrated = await target.migrate([known[c] for c in order if c in known])
    progress(f"target migrated ({len(report.migrated)} migrations applied)")

    tables = [t for t in await source.tables() if t != "schema_migrations"]
    tables.sort(key=lambda t: (t not in PARENTS_FIRST, t))
    target_tables = set(await target.tables())
    missing = [t for t in tables if t not in target_tables]
    if missing:
        raise CopyError(f"the target lacks tables the source has: {', '.join(missing)}")

    async with source.transaction() as read, target.transaction() as write:
        for table in reversed(tables):
            if table in filled:
                await write.execute(f"DELETE FROM {quote_name(table)}")
                report.emptied.append(table)
        for table in sorted(set(filled) - set(tables)):
            await write.execute(f"DELETE FROM {quote_name(table)}")
            report.emptied.append(table)
        for table in tables:
            source_columns = await source.columns(table)
            kinds = await target.columns(table)
            if set(source_columns) != set(kinds):
                raise CopyError(
                    f"table {table} has columns {sorted(source_columns)} in the source and {sorted(kinds)} "
                    "in the target"
                )
            names = list(source_columns)
            select = f"SELECT {', '.join(map(quote_name, names))} FROM {quote_name(table)}"
            insert = (
                f"INSERT INTO {quote_name(table)} ({', '.join(map(quote_name, names))}) "
                f"VALUES ({', '.join('?' * len(names))})"
            )
            rows = [
                tuple(_convert(v, kinds[c]) for c, v in zip(names, row, strict=True))
                for row in await read.fetch_all(select)
            ]
            for start in range(0, len(rows), BATCH):
                await write.execute_many(insert, rows[start : start + BATCH])
            report.tables[table] = len(rows)
            progress(f"  {table}: {len(rows)} rows")
        await target.after_bulk_load(write, tables)
        for table in tables:
            copied = await _count(write, table)
            if copied != report.tables[table] or copied != await _count(read, table):
                raise CopyError(f"{table}: {report.tables[table]} rows read, {copied} in the target; nothing copied")
        for table in OWNERSHIP:
            if table in tables:
                theirs, ours = await _ownership(read, table), await _ownership(write, table)
                if theirs != ours:
                    raise CopyError(f"{table}: the ownership records differ after the copy; nothing copied")
                report.ownership[table] = len(ours)
    return report


def add_commands(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="the database: copy it to another (SQLite -> PostgreSQL)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    copy = db_sub.add_parser("copy", help="copy every table into another database, checked (stop the studio first)")
    copy.add_argument(
        "--from",
        dest="source",
        default=None,
        help="sqlite:///data/studio.db, postgresql://... or a file (default: the studio's, STUDIO_DATABASE_URL)",
    )
    copy.add_argument("--to", dest="target", required=True, help="postgresql://user:pass@host:5432/db or sqlite:///")
    copy.add_argument("--overwrite", action="store_true", help="replace the data a non-empty target holds")


async def _copy(args: argparse.Namespace, default_source: Database) -> CopyReport:
    source = open_target(args.source) if args.source else default_source
    target = open_target(args.target)
    if source.location == target.location:
        raise CopyError("--from and --to are the same database")
    if source.dialect == "sqlite" and not Path(source.location).is_file():
        where = "--from" if args.source else "the studio's database; pass --from or set STUDIO_DATA_DIR"
        raise CopyError(f"there is no database at {source.location} ({where})")
    opened: list[Database] = []
    try:
        for db, role in ((source, "--from"), (target, "--to")):
            try:
                await db.open()
            except DatabaseError as exc:
                raise CopyError(f"{role}: {exc}") from None
            opened.append(db)
        print(f"copying {source.location} -> {target.location}", flush=True)
        return await copy_database(source, target, overwrite=args.overwrite)
    finally:
        for db in opened:
            await db.close()


def run(default_source: Database, args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(_copy(args, default_source))
    except (CopyError, DatabaseError) as exc:
        print(f"localai-studio db copy: {exc}", file=sys.stderr)
        return 1
    rows = sum(report.tables.values())
    owners = ", ".join(f"{t} {n}" for t, n in report.ownership.items()) or "none"
    print(f"copied {len(report.tables)} tables, {rows} rows; row counts match; ownership records match ({owners})")
    if report.emptied:
        print(f"  replaced the target's data in: {', '.join(report.emptied)}")
    print(f"  next: stop using the source; start the studio with STUDIO_DATABASE_URL set to {report.target}")
    return 0
