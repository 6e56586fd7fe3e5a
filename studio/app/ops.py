"""Backups and restores: the studio's state in one archive, and the way back, checked.

    localai-studio backup  [--out DIR] [--keep-days 7] [--file PATH ...] [--models]
    localai-studio restore ARCHIVE [--check] [--force] [--overwrite-files]

A backup is `localai_backup_YYYYMMDD_HHMMSS.tar.gz` holding:

- `data/studio.db`: a consistent snapshot of the database taken with SQLite's online backup API in
  one step, so it is exact as of one instant even while the studio keeps writing (WAL readers never
  block writers); checked (`PRAGMA integrity_check`) and counted (rows per table) before it is kept;
  or, on PostgreSQL (STUDIO_DATABASE_URL), `data/studio.pgdump`: `pg_dump -Fc` of one snapshot,
  counted in that snapshot, restored with `pg_restore --clean` (studio.app.ops_postgres);
- `data/secret_key` (when the cookie key was generated there) and the catalog in effect;
- `files/<path>`: the deployment's own files (`.env`, compose files), named with `--file`;
- `data/ollama/`: the Ollama models, only with `--models` (large; without them they are pulled again);
- `manifest.json`: what is inside, with checksums, the integrity result and the row counts.

Restoring checks the archive (checksum, integrity, row counts against the manifest) before it
touches anything, keeps the database it replaces beside it (`studio.db.before-restore-...`), puts
the snapshot in place without stale `-wal`/`-shm` files, and checks it again where it now lies.
The JetStream store (`data/nats`) is not backed up: the database is the source of truth.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from studio import catalog
from studio.app import ops_postgres
from studio.app.ops_common import DatabaseReport, OpsError
from studio.runtime.host import VERSION
from studio.runtime.settings import Settings

FORMAT = 1
ARCHIVE_NAME = re.compile(r"^localai_backup_(\d{8}_\d{6})\.tar\.gz$")
DB_NAME = "studio.db"
PG_DUMP_NAME = "studio.pgdump"  # pg_dump -Fc of a PostgreSQL database (studio.app.ops_postgres)
MANIFEST = "manifest.json"


# -- the database snapshot -----------------------------------------------------------------------


def inspect_database(path: Path) -> DatabaseReport:
    """Integrity check, rows per table and applied migrations of a database file (read only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}
        migrations: list[str] = []
        if "schema_migrations" in tables:
            migrations = [
                f"{c}:{v:04d}_{n}"
                for c, v, n in conn.execute(
                    "SELECT component, version, name FROM schema_migrations ORDER BY component, version"
                )
            ]
        return DatabaseReport(integrity, tables, migrations)
    finally:
        conn.close()


def snapshot_database(source: Path, target: Path) -> DatabaseReport:
    """Copy a live database into `target` with the online backup API; check and count the copy."""
    if not source.is_file():
        raise OpsError(f"there is no database at {source}: check STUDIO_DATA_DIR (or --data-dir)")
    src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        # pages=-1: every page in one step, under one read transaction, so the copy is exactly the
        # database as of that instant; writers go on meanwhile (WAL) and are not restarted.
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        dst.commit()
    except sqlite3.Error as exc:
        raise OpsError(f"the database at {source} could not be copied: {exc}") from None
    finally:
        dst.close()
        src.close()
    report = inspect_database(target)
    if report.integrity != "ok":
        raise OpsError(
            f"the snapshot of {source} fails its integrity check ({report.integrity[:300]}); "
            "the live database may be damaged: restore the latest good backup"
        )
    return report


# -- backup --------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_name(now: datetime) -> str:
    return f"localai_backup_{now.strftime('%Y%m%d_%H%M%S')}.tar.gz"


def _stored_path(path: Path, root: Path) -> str:
    """Where an extra file goes in the archive: `files/` + its path relative to `root`."""
    resolved = path.resolve()
    try:
        rel = resolved.relative_to(root.resolve())
    except ValueError:
        rel = Path("_absolute") / resolved.relative_to(resolved.anchor)
    return str(PurePosixPath("files", *rel.parts))


@dataclass
class BackupResult:
    archive: Path
    manifest: dict[str, Any]
    removed: list[Path]


def create_backup(
    settings: Settings,
    out_dir: Path,
    *,
    files: list[Path] | None = None,
    root: Path | None = None,
    models: bool = False,
    keep_days: float | None = 7,
    now: datetime | None = None,
) -> BackupResult:
    now = now or datetime.now(UTC)
    root = root or Path.cwd()
    data_dir = settings.data_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    name = archive_name(now)
    final = out_dir / name
    if final.exists():
        raise OpsError(f"{final} already exists (two backups in the same second?): try again")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=out_dir) as tmp:
        work = Path(tmp)
        started = time.monotonic()
        if settings.database_url is not None and settings.database_url.is_postgres:
            engine, snapshot = "postgresql", work / PG_DUMP_NAME
            report = ops_postgres.dump(settings.database_url, snapshot)
        else:
            engine, snapshot = "sqlite", work / DB_NAME
            report = snapshot_database(settings.database_path, snapshot)
        entries: list[tuple[Path, str]] = [(snapshot, f"data/{snapshot.name}")]
        key = data_dir / "secret_key"
        if key.is_file():
            entries.append((key, "data/secret_key"))
        catalog_path = settings.catalog_path or catalog.DEFAULT_PATH
        if catalog_path.is_file():
            entries.append((catalog_path, f"catalog/{catalog_path.name}"))
        for extra in files or []:
            if not extra.is_file():
                raise OpsError(f"{extra} is not a file: check the --file arguments")
            entries.append((extra, _stored_path(extra, root)))
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "studio_version": VERSION,
            "sqlite_version": sqlite3.sqlite_version,
            "data_dir": str(data_dir.resolve()),
            "root": str(root.resolve()),
            "database": {
                "engine": engine,
                "path": f"data/{snapshot.name}",
                "bytes": snapshot.stat().st_size,
                "sha256": sha256_file(snapshot),
                "integrity": report.integrity,
                "tables": report.tables,
                "migrations": report.migrations,
                "snapshot_s": round(time.monotonic() - started, 3),
            },
            "catalog": {"source": str(catalog_path), "path": f"catalog/{catalog_path.name}"},
            "files": [
                {"path": arc, "source": str(src), "bytes": src.stat().st_size, "sha256": sha256_file(src)}
                for src, arc in entries[1:]
                if arc.startswith("files/")
            ],
            "models": models,
        }
        partial = work / (name + ".partial")
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            blob = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(blob), int(now.timestamp()), 0o600
            tar.addfile(info, io.BytesIO(blob))
            for src, arc in entries:
                tar.add(src, arcname=arc, recursive=False)
            if models:
                ollama = data_dir / "ollama"
                if ollama.is_dir():
                    tar.add(ollama, arcname="data/ollama", filter=_plain_files)
        os.chmod(partial, 0o600)  # it holds .env and the cookie key
        os.replace(partial, final)
    removed = prune_backups(out_dir, keep_days, now) if keep_days is not None else []
    return BackupResult(final, manifest, removed)


def _plain_files(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return info if info.isfile() or info.isdir() else None  # restore refuses links and devices


def backup_time(path: Path) -> datetime | None:
    m = ARCHIVE_NAME.match(path.name)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)


def prune_backups(out_dir: Path, keep_days: float, now: datetime) -> list[Path]:
    """Delete backups older than `keep_days` (by the time in their name); the newest always stays."""
    dated = sorted(
        ((t, p) for p in out_dir.glob("localai_backup_*.tar.gz") if (t := backup_time(p))), key=lambda tp: tp[0]
    )
    cutoff = now - timedelta(days=keep_days)
    removed = []
    for when, path in dated[:-1]:
        if when < cutoff:
            path.unlink()
            removed.append(path)
    return removed


# -- restore -------------------------------------------------------------------------------------


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular files and directories with relative paths only: nothing may land outside the target."""
    members = []
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise OpsError(f"the archive holds an unsafe path {member.name!r}: refusing it")
        if not (member.isfile() or member.isdir()):
            raise OpsError(f"the archive holds a link or device {member.name!r}: refusing it")
        members.append(member)
    return members


def read_manifest(archive: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            raw = tar.extractfile(MANIFEST)
            if raw is None:
                raise KeyError(MANIFEST)
            return json.loads(raw.read())
    except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError) as exc:
        raise OpsError(f"{archive} is not a readable studio backup ({type(exc).__name__}: {exc})") from None


def extract(archive: Path, target: Path) -> dict[str, Any]:
    manifest = read_manifest(archive)
    if manifest.get("format") != FORMAT:
        raise OpsError(f"{archive} has backup format {manifest.get('format')!r}; this studio reads {FORMAT}")
    with tarfile.open(archive, "r:gz") as tar:
        for member in _safe_members(tar):
            dest = target / member.name
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, open(dest, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.chmod(dest, member.mode & 0o777 or 0o600)
    return manifest


def verify_database(path: Path, expected: dict[str, Any]) -> DatabaseReport:
    """The database at `path` against the manifest: checksum (when given), integrity, row counts."""
    if "sha256" in expected and sha256_file(path) != expected["sha256"]:
        raise OpsError(f"{path.name} does not match the checksum in the manifest: the archive is damaged")
    report = inspect_database(path)
    if report.integrity != "ok":
        raise OpsError(f"the backed-up database fails its integrity check: {report.integrity[:300]}")
    if report.tables != expected["tables"]:
        diff = {
            t: (expected["tables"].get(t), report.tables.get(t))
            for t in sorted(set(expected["tables"]) | set(report.tables))
            if expected["tables"].get(t) != report.tables.get(t)
        }
        raise OpsError(f"row counts differ from the manifest (table: (manifest, found)): {diff}")
    return report


@dataclass
class RestoreResult:
    manifest: dict[str, Any]
    report: DatabaseReport
    placed: list[Path] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    set_aside: list[Path] = field(default_factory=list)


def _owner_of(path: Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        st = path.stat()
        return st.st_uid, st.st_gid
    return None


def _take_owner(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(path, *owner)


def restore_backup(
    settings: Settings,
    archive: Path,
    *,
    root: Path | None = None,
    check_only: bool = False,
    force: bool = False,
    overwrite_files: bool = False,
) -> RestoreResult:
    root = root or Path.cwd()
    data_dir = settings.data_dir
    on_postgres = settings.database_url is not None and settings.database_url.is_postgres
    engine = read_manifest(archive).get("database", {}).get("engine", "sqlite")
    if engine == "postgresql" and not on_postgres:
        raise OpsError(
            "this backup is of a PostgreSQL database: set STUDIO_DATABASE_URL to the PostgreSQL database to "
            "restore into (an empty one will do)"
        )
    if engine == "sqlite" and on_postgres and not check_only:
        raise OpsError(
            "this backup is of a SQLite database and the studio uses PostgreSQL: restore it with "
            "STUDIO_DATABASE_URL unset, then `localai-studio db copy --to <the PostgreSQL URL> --overwrite`"
        )
    if engine == "postgresql":
        return _restore_postgres(
            settings, archive, root=root, check_only=check_only, force=force, overwrite_files=overwrite_files
        )
    target_db = settings.database_path
    if not check_only and target_db.exists() and not force:
        raise OpsError(
            f"a database is already at {target_db}: stop the studio first (compose/restore does), "
            "then pass --force to replace it (the current one is kept beside it)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    # Unpack next to the data dir, so the database moves into place with one rename.
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as tmp:
        work = Path(tmp)
        manifest = extract(archive, work)
        db_entry = manifest["database"]
        report = verify_database(work / db_entry["path"], db_entry)
        result = RestoreResult(manifest, report)
        if check_only:
            return result
        owner = _owner_of(data_dir)
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            current = target_db.with_name(target_db.name + suffix)
            if current.exists():
                aside = current.with_name(f"{DB_NAME}.before-restore-{stamp}{suffix}")
                os.replace(current, aside)
                result.set_aside.append(aside)
        os.replace(work / db_entry["path"], target_db)
        _take_owner(target_db, owner)
        result.placed.append(target_db)
        for name in ("secret_key",):
            src = work / "data" / name
            if src.is_file():
                os.replace(src, data_dir / name)
                _take_owner(data_dir / name, owner)
                result.placed.append(data_dir / name)
        _put_back_files(manifest, work, data_dir, root, result, overwrite_files=overwrite_files)
        # Check again where it now lies: what the studio will open is what was verified.
        result.report = verify_database(target_db, {"tables": db_entry["tables"]})
        return result


def _put_back_files(
    manifest: dict[str, Any], work: Path, data_dir: Path, root: Path, result: RestoreResult, *, overwrite_files: bool
) -> None:
    """The Ollama models (when backed up) and the deployment's files, from the unpacked archive."""
    models = work / "data" / "ollama"
    if models.is_dir():
        dest = data_dir / "ollama"
        dest.mkdir(exist_ok=True)
        shutil.copytree(models, dest, dirs_exist_ok=True)
        result.placed.append(dest)
    for entry in manifest.get("files", []):
        rel = PurePosixPath(entry["path"]).relative_to("files")
        dest = (root / rel) if rel.parts[0] != "_absolute" else Path("/", *rel.parts[1:])
        src = work / entry["path"]
        if dest.exists() and sha256_file(dest) == entry["sha256"]:
            continue
        if dest.exists() and not overwrite_files:
            result.kept.append(str(dest))
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        result.placed.append(dest)


def _compare_counts(found: dict[str, int], expected: dict[str, int]) -> None:
    if found != expected:
        diff = {
            t: (expected.get(t), found.get(t))
            for t in sorted(set(expected) | set(found))
            if expected.get(t) != found.get(t)
        }
        raise OpsError(f"row counts differ from the manifest (table: (manifest, found)): {diff}")


def _restore_postgres(
    settings: Settings, archive: Path, *, root: Path, check_only: bool, force: bool, overwrite_files: bool
) -> RestoreResult:
    """A pg_dump backup into the PostgreSQL database of STUDIO_DATABASE_URL (the rest as for SQLite)."""
    url = settings.database_url
    assert url is not None
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as tmp:
        work = Path(tmp)
        manifest = extract(archive, work)
        db_entry = manifest["database"]
        dump_file = work / db_entry["path"]
        if sha256_file(dump_file) != db_entry["sha256"]:
            raise OpsError(f"{dump_file.name} does not match the checksum in the manifest: the archive is damaged")
        ops_postgres.check_dump(dump_file)
        report = DatabaseReport(db_entry["integrity"], db_entry["tables"], db_entry.get("migrations", []))
        result = RestoreResult(manifest, report)
        if check_only:
            return result
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        result.set_aside = ops_postgres.restore(url, dump_file, data_dir, stamp, force=force)
        owner = _owner_of(data_dir)
        src = work / "data" / "secret_key"
        if src.is_file():
            os.replace(src, data_dir / "secret_key")
            _take_owner(data_dir / "secret_key", owner)
            result.placed.append(data_dir / "secret_key")
        _put_back_files(manifest, work, data_dir, root, result, overwrite_files=overwrite_files)
        result.report = ops_postgres.inspect(url)
        _compare_counts(result.report.tables, db_entry["tables"])
        return result


# -- the CLI -------------------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction) -> None:
    backup = sub.add_parser("backup", help="back up the database (online), catalog and settings into one archive")
    backup.add_argument(
        "--out",
        type=Path,
        default=Path("backups"),
        help="folder for localai_backup_YYYYMMDD_HHMMSS.tar.gz (default ./backups)",
    )
    backup.add_argument(
        "--keep-days",
        type=float,
        default=7,
        help="delete backups older than this from --out (default 7; the newest always stays)",
    )
    backup.add_argument(
        "--file", type=Path, action="append", default=[], help="also keep this file (e.g. compose/.env); repeatable"
    )
    backup.add_argument(
        "--root",
        type=Path,
        default=None,
        help="--file paths are stored relative to this folder (default: the current one)",
    )
    backup.add_argument("--models", action="store_true", help="include the Ollama models (data dir's ollama/)")
    backup.add_argument("--json", action="store_true", help="print the manifest as JSON")
    restore = sub.add_parser("restore", help="check a backup and put it back (the studio must be stopped)")
    restore.add_argument("archive", type=Path, help="a localai_backup_*.tar.gz")
    restore.add_argument("--check", action="store_true", help="only check the archive; change nothing")
    restore.add_argument("--force", action="store_true", help="replace the database that is there now")
    restore.add_argument(
        "--overwrite-files",
        action="store_true",
        help="also replace files (.env, compose files) that differ from the backup's",
    )
    restore.add_argument(
        "--root",
        type=Path,
        default=None,
        help="put backed-up files back relative to this folder (default: the current one)",
    )


def _counts(tables: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in tables.items()) or "no tables"


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.command == "backup":
            result = create_backup(
                settings, args.out, files=args.file, root=args.root, models=args.models, keep_days=args.keep_days
            )
            if args.json:
                print(json.dumps({"archive": str(result.archive), **result.manifest}, indent=2))
            else:
                db = result.manifest["database"]
                print(f"backup written: {result.archive} ({result.archive.stat().st_size} bytes)")
                print(f"  database: integrity {db['integrity']}; rows: {_counts(db['tables'])}")
                for entry in result.manifest["files"]:
                    print(f"  file: {entry['source']}")
                for old in result.removed:
                    print(f"  removed old backup: {old.name}")
            return 0
        restored = restore_backup(
            settings,
            args.archive,
            root=args.root,
            check_only=args.check,
            force=args.force,
            overwrite_files=args.overwrite_files,
        )
        m = restored.manifest
        verb = "checked" if args.check else "restored"
        print(f"{verb}: {args.archive} (taken {m['created_at']}, studio {m['studio_version']})")
        print(f"  database: integrity {restored.report.integrity}; rows: {_counts(restored.report.tables)}")
        for path in restored.set_aside:
            print(f"  previous database kept as {path}")
        for path in restored.placed:
            print(f"  put back: {path}")
        for kept in restored.kept:
            print(f"  kept the current {kept} (differs from the backup's; --overwrite-files takes the backup's)")
        return 0
    except OpsError as exc:
        print(f"localai-studio {args.command}: {exc}", file=sys.stderr)
        return 1
