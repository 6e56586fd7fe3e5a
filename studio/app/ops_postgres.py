"""Backups and restores of a PostgreSQL database (STUDIO_DATABASE_URL=postgresql://...), for studio.app.ops.

- Backup: `pg_dump -Fc` (custom format: compressed, restorable table by table) of one consistent
  snapshot, and the row count of every table taken in that same snapshot (`pg_export_snapshot`), so
  the manifest's counts are exactly what the dump holds; the dump is checked readable
  (`pg_restore --list`) before it is kept.
- Restore: the dump is checked the same way first; the database there now is dumped beside the data
  dir (`studio.pgdump.before-restore-...`) when it holds anything; then `pg_restore --clean
  --if-exists --single-transaction` (all or nothing) and the row counts are compared with the manifest.
- The tools come from PATH or Debian's /usr/lib/postgresql/<version>/bin (the newest); the password
  travels in PGPASSWORD, never on a command line another user could read.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from studio.app.ops_common import DatabaseReport, OpsError
from studio.runtime.database import Database, DatabaseError, quote_name
from studio.runtime.dialect import DatabaseUrl


def tool(name: str) -> str:
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise OpsError(f"{name} is not installed: apt-get install postgresql-client (the server's major version or newer)")


def _connection(url: DatabaseUrl) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries it."""
    parts = urlsplit(url.url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = parts.password
        netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), env
    return url.url, env


def _run(args: list[str], env: dict[str, str], what: str) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise OpsError(f"{what} failed: {result.stderr.strip()[-500:] or result.stdout.strip()[-500:]}")
    return result.stdout


async def _report(db: Database) -> DatabaseReport:
    tables = await db.tables()
    counts = {}
    for name in tables:
        row = await db.fetch_one(f"SELECT COUNT(*) FROM {quote_name(name)}")
        counts[name] = int(row[0]) if row else 0
    migrations: list[str] = []
    if "schema_migrations" in counts:
        rows = await db.fetch_all("SELECT component, version, name FROM schema_migrations ORDER BY component, version")
        migrations = [f"{c}:{int(v):04d}_{n}" for c, v, n in rows]
    return DatabaseReport(await db.integrity_check(), counts, migrations)


async def _open(url: DatabaseUrl) -> Database:
    db = Database(url)
    try:
        await db.open()
    except DatabaseError as exc:
        raise OpsError(str(exc)) from None
    return db


def inspect(url: DatabaseUrl) -> DatabaseReport:
    async def go() -> DatabaseReport:
        db = await _open(url)
        try:
            return await _report(db)
        finally:
            await db.close()

    return asyncio.run(go())


def dump(url: DatabaseUrl, target: Path) -> DatabaseReport:
    """`pg_dump -Fc` of one snapshot into `target`; the report counts rows in that same snapshot."""
    import asyncpg

    dsn, env = _connection(url)
    pg_dump = tool("pg_dump")

    async def go() -> DatabaseReport:
        try:
            conn = await asyncpg.connect(url.url, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise OpsError(f"cannot connect to {url.masked()}: {exc}; check STUDIO_DATABASE_URL") from None
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                names = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                        "AND table_type = 'BASE TABLE' ORDER BY table_name"
                    )
                ]
                counts = {n: int(await conn.fetchval(f"SELECT COUNT(*) FROM {quote_name(n)}")) for n in names}
                migrations = []
                if "schema_migrations" in counts:
                    rows = await conn.fetch(
                        "SELECT component, version, name FROM schema_migrations ORDER BY component, version"
                    )
                    migrations = [f"{c}:{int(v):04d}_{n}" for c, v, n in rows]
                proc = await asyncio.create_subprocess_exec(
                    pg_dump, "-Fc", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
                    "-f", str(target), f"--dbname={dsn}",
                    env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                _, err = await proc.communicate()
                if proc.returncode != 0:
                    raise OpsError(f"pg_dump of {url.masked()} failed: {err.decode().strip()[-500:]}")
        finally:
            await conn.close()
        return DatabaseReport("ok", counts, migrations)

    report = asyncio.run(go())
    check_dump(target)
    db_report = inspect(url)
    report.integrity = db_report.integrity
    if report.integrity != "ok":
        raise OpsError(f"the database fails its check ({report.integrity[:300]}): restore the latest good backup")
    return report


def check_dump(path: Path) -> None:
    """The dump is a complete, readable custom-format archive (pg_restore can list it)."""
    listing = _run([tool("pg_restore"), "--list", str(path)], dict(os.environ), f"reading {path.name}")
    if "TABLE DATA" not in listing:
        raise OpsError(f"{path.name} holds no table data: the archive is damaged")


def restore(url: DatabaseUrl, dump_file: Path, keep_dir: Path, stamp: str, *, force: bool) -> list[Path]:
    """Put `dump_file` into the database at `url`; the data there now is dumped into `keep_dir` first."""
    current = inspect(url)
    set_aside: list[Path] = []
    holds = {t: n for t, n in current.tables.items() if n and t != "schema_migrations"}
    if holds and not force:
        raise OpsError(
            f"the database at {url.masked()} holds data ({', '.join(holds)}): stop the studio first "
            "(compose/restore does), then pass --force to replace it (the current data is dumped beside it)"
        )
    if current.tables:
        keep_dir.mkdir(parents=True, exist_ok=True)
        aside = keep_dir / f"studio.pgdump.before-restore-{stamp}"
        dsn, env = _connection(url)
        _run(
            [tool("pg_dump"), "-Fc", "--no-owner", "-f", str(aside), f"--dbname={dsn}"], env, "keeping the current data"
        )
        set_aside.append(aside)
    dsn, env = _connection(url)
    _run(
        [tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
         f"--dbname={dsn}", str(dump_file)],
        env,
        f"pg_restore into {url.masked()}",
    )  # fmt: skip
    return set_aside
