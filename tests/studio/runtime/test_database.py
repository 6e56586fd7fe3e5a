"""The database: migrations applied once (even when processes race), transactions with the outbox."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from events.envelope import Event
from studio.runtime.database import (
    RUNTIME_MIGRATIONS,
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Migrations,
    SqliteDatabase,
    split_statements,
)
from studio.runtime.dialect import DatabaseUrl

SAMPLE = Migrations("sample", Path(__file__).resolve().parents[2] / "sample" / "migrations")


async def open_db(target: Path | DatabaseUrl) -> Database:
    db = Database(target)
    await db.open()
    return db


async def test_migrations_apply_once_and_are_recorded(tmp_path: Path, db_target: Path | DatabaseUrl) -> None:
    db = await open_db(db_target)
    try:
        first = await db.migrate([RUNTIME_MIGRATIONS, SAMPLE])
        again = await db.migrate([RUNTIME_MIGRATIONS, SAMPLE])
        rows = await db.fetch_all("SELECT component, version, name FROM schema_migrations ORDER BY component")
    finally:
        await db.close()
    assert first == [
        "runtime:0001_outbox",
        "runtime:0002_outbox_published_index",
        "runtime:0003_outbox_claims",
        "sample:0001_notes",
        "sample:0002_cures",
    ]
    assert again == []
    assert [tuple(r) for r in rows] == [
        ("runtime", 1, "outbox"),
        ("runtime", 2, "outbox_published_index"),
        ("runtime", 3, "outbox_claims"),
        ("sample", 1, "notes"),
        ("sample", 2, "cures"),
    ]


async def test_racing_processes_apply_each_migration_once(tmp_path: Path, db_target: Path | DatabaseUrl) -> None:
    dbs = [await open_db(db_target) for _ in range(3)]
    try:
        results = await asyncio.gather(*(db.migrate([RUNTIME_MIGRATIONS, SAMPLE]) for db in dbs))
        count = await dbs[0].fetch_one("SELECT COUNT(*) FROM schema_migrations")
    finally:
        for db in dbs:
            await db.close()
    assert sorted(m for r in results for m in r) == [
        "runtime:0001_outbox",
        "runtime:0002_outbox_published_index",
        "runtime:0003_outbox_claims",
        "sample:0001_notes",
        "sample:0002_cures",
    ]
    assert count is not None and count[0] == 5


async def test_failed_migration_is_rolled_back_and_named(tmp_path: Path, db_target: Path | DatabaseUrl) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_broken.sql").write_text("CREATE TABLE ok_table (x INTEGER);\nCREATE TABLE (;\n")
    db = await open_db(db_target)
    try:
        with pytest.raises(DatabaseError, match=r"broken:0001_broken\.sql"):
            await db.migrate([Migrations("broken", folder)])
        tables = [t for t in await db.tables() if t == "ok_table"]
    finally:
        await db.close()
    assert tables == [], "a failed migration leaves nothing behind"


async def test_rolled_back_transaction_publishes_nothing(tmp_path: Path, db_target: Path | DatabaseUrl) -> None:
    db = await open_db(db_target)
    committed: list[list[Event]] = []
    db.on_events_committed.append(committed.append)
    try:
        await db.migrate([RUNTIME_MIGRATIONS, SAMPLE])
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO sample_notes VALUES (1, 'x', 'now')")
                await tx.publish(Event(type="sample.recorded", source="/t", data={"n": 1}))
                raise RuntimeError("payment provider said no")
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO sample_notes VALUES (2, 'y', 'now')")
            await tx.publish(Event(type="sample.recorded", source="/t", data={"n": 2}))
        outbox = await db.fetch_all("SELECT event_type FROM outbox")
        notes = await db.fetch_all("SELECT n FROM sample_notes")
    finally:
        await db.close()
    assert [r[0] for r in notes] == [2]
    assert len(outbox) == 1
    assert [[e.data["n"] for e in batch] for batch in committed] == [[2]]


async def test_a_transaction_cancelled_as_it_begins_leaves_none_open(db_target: Path | DatabaseUrl) -> None:
    """A caller cancelled while its BEGIN is on its way (a client hanging up as its usage is written) must
    not leave the connection inside a transaction: the next one would fail ("within a transaction")."""
    db = await open_db(db_target)
    entered = 0

    async def write() -> None:
        nonlocal entered
        async with db.transaction() as tx:
            entered += 1
            await tx.execute("INSERT INTO sample_notes VALUES (?, 'x', 'now')", (entered + 100,))

    try:
        await db.migrate([RUNTIME_MIGRATIONS, SAMPLE])
        for n in range(1, 30):  # cancelled at each point a write can be cancelled in, in turn
            task = asyncio.create_task(write())
            for _ in range(n % 6):
                await asyncio.sleep(0)  # lets the task run that many steps: no waiting on a condition
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO sample_notes VALUES (?, 'y', 'now')", (n,))
        notes = await db.fetch_all("SELECT n FROM sample_notes WHERE n < 100")
    finally:
        await db.close()
    assert sorted(r[0] for r in notes) == list(range(1, 30))


def test_split_statements_keeps_triggers_whole() -> None:
    script = """
    -- a comment
    CREATE TABLE a (x INTEGER);
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        UPDATE a SET x = 1;
    END;
    """
    assert len(split_statements(script)) == 2


async def test_read_then_write_transactions_of_two_processes_lose_no_update(db_target: Path | DatabaseUrl) -> None:
    """The functions' read-modify-write steps rely on one writer at a time (SQLite's BEGIN IMMEDIATE;
    PostgreSQL's writer lock): two processes' transactions never interleave."""
    dbs = [await open_db(db_target) for _ in range(2)]
    try:
        await dbs[0].migrate([RUNTIME_MIGRATIONS, SAMPLE])
        await dbs[0].execute("INSERT INTO sample_seen (n, attempts) VALUES (1, 0)")

        async def increment(db: Database) -> None:
            async with db.transaction() as tx:
                row = await tx.fetch_one("SELECT attempts FROM sample_seen WHERE n = ?", (1,))
                assert row is not None
                await asyncio.sleep(0.001)  # another writer would slip in here without the lock
                await tx.execute("UPDATE sample_seen SET attempts = ? WHERE n = ?", (row[0] + 1, 1))

        await asyncio.gather(*(increment(dbs[i % 2]) for i in range(40)))
        final = await dbs[1].fetch_one("SELECT attempts FROM sample_seen WHERE n = 1")
    finally:
        for db in dbs:
            await db.close()
    assert final is not None and final[0] == 40


async def test_the_database_file_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which made studio.db 0644
    try:
        fresh = await open_db(tmp_path / "studio.db")
        await fresh.migrate([RUNTIME_MIGRATIONS, SAMPLE])
        await fresh.close()
        made_before = tmp_path / "old.db"
        made_before.touch(mode=0o644)  # a studio.db from an earlier version
        await (await open_db(made_before)).close()  # opened by this version: its mode is fixed
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.name.split("-")[0].endswith(".db")}
    assert modes["studio.db"] == modes["old.db"] == 0o600, modes
    assert all(mode == 0o600 for mode in modes.values()), modes


async def test_a_sqlite_file_another_process_keeps_locked_is_unavailable_not_a_driver_error(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "studio.db", busy_timeout_s=0.5)  # the studio's is 10 s: the same, sooner
    await db.open()
    await db.migrate([RUNTIME_MIGRATIONS])
    other = sqlite3.connect(tmp_path / "studio.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # held past the busy timeout
        with pytest.raises(DatabaseUnavailable, match="unavailable"):
            async with db.transaction() as tx:
                await tx.execute("DELETE FROM outbox")
        other.execute("ROLLBACK")
        async with db.transaction() as tx:  # the lock gone, the same connection writes again
            await tx.execute("DELETE FROM outbox")
    finally:
        other.close()
        await db.close()
