"""Backups taken while purchases are being written, and restores checked, with real processes.

The studio runs as `localai-studio up` (a real process, its own NATS, test mode); visitors buy
models over HTTP the whole time `localai-studio backup` runs; the archive is restored into a fresh
data dir with `localai-studio restore`, and a studio started on it still knows every visitor.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from studio.app import ops
from studio.runtime.settings import Settings
from tests.conftest import free_port
from tests.doubles.ollama import OllamaDouble
from tests.support import eventually

CLI = str(Path(sys.executable).parent / "localai-studio")
MODELS = ("llama3.2:1b", "tinyllama:latest", "llama3.2:3b", "qwen2.5:0.5b")  # paid (test mode) and free


def studio_env(data_dir: Path, ollama_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(
        {
            "STUDIO_DATA_DIR": str(data_dir),
            "STUDIO_PORT": str(free_port()),
            "STUDIO_NATS_PORT": str(free_port()),
            "STUDIO_OLLAMA_URL": ollama_url,
            "STUDIO_SKIP_PAYMENT": "true",
            "STUDIO_HEARTBEAT_S": "0.5",
            "STUDIO_LOG_LEVEL": "WARNING",
            "STUDIO_WRITES_PER_ADDRESS_PER_MINUTE": "100000",  # every buyer here is one address
        }
    )
    env.update(extra)
    return env


@dataclass
class Studio:
    env: dict[str, str]
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['STUDIO_PORT']}"


@pytest.fixture
async def ollama_double() -> AsyncIterator[OllamaDouble]:
    async with OllamaDouble(installed=["tinyllama:latest"]) as double:
        yield double


@pytest.fixture
async def run_studio(tmp_path: Path) -> AsyncIterator:
    started: list[Studio] = []

    async def start(data_dir: Path, ollama_url: str, **extra: str) -> Studio:
        env = studio_env(data_dir, ollama_url, **extra)
        proc = await asyncio.create_subprocess_exec(
            CLI, "up", env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"studio-{len(started)}.log", "wb")
        )
        studio = Studio(env, proc)
        started.append(studio)

        async def ready() -> bool:
            assert proc.returncode is None, (tmp_path / f"studio-{len(started) - 1}.log").read_text()[-2000:]
            try:
                async with aiohttp.ClientSession() as s, s.get(studio.url + "/api/models") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=30, interval=0.1, message="the studio to serve /api/models")
        return studio

    yield start
    for studio in started:
        if studio.proc.returncode is None:
            studio.proc.terminate()
            try:
                await asyncio.wait_for(studio.proc.wait(), 15)
            except TimeoutError:
                studio.proc.kill()
                await studio.proc.wait()


@dataclass
class Buyers:
    """Visitors buying models over HTTP, each purchase by a new visitor, until told to stop."""

    url: str
    committed: list[tuple[str, float]] = field(default_factory=list)  # (purchase id, answered at)
    cookies: dict[str, str] = field(default_factory=dict)  # purchase id -> that visitor's cookie
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def buy(self, worker: int) -> None:
        jar = aiohttp.DummyCookieJar()  # cookies by hand: every purchase is a new visitor
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            n = 0
            while not self.stop.is_set():
                model = MODELS[(worker + n) % len(MODELS)]
                n += 1
                async with session.get(f"{self.url}/api/models") as page:  # the visit sets the session
                    cookie = page.cookies["studio_visitor"].value
                headers = {"Cookie": f"studio_visitor={cookie}"}
                async with session.post(f"{self.url}/api/models/purchase/{model}", headers=headers) as resp:
                    body = await resp.json()
                    assert resp.status == 200 and body["status"] == "success", body
                    self.committed.append((body["purchase_id"], time.monotonic()))
                    self.cookies[body["purchase_id"]] = cookie


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_backup_while_purchases_are_written_restores_every_committed_purchase(
    tmp_path: Path, ollama_double: OllamaDouble, run_studio
) -> None:
    live = await run_studio(tmp_path / "live", ollama_double.url)
    buyers = Buyers(live.url)
    workers = [asyncio.create_task(buyers.buy(i)) for i in range(4)]
    await eventually(lambda: len(buyers.committed) >= 40, timeout=30, message="purchases before the backup")

    checkout = tmp_path / "checkout"  # the deployment's own files, as on a VPS
    (checkout / "compose").mkdir(parents=True)
    (checkout / "compose" / ".env").write_text("STUDIO_ADMIN_TOKEN=op-secret\n")
    backup_started = time.monotonic()
    code, out, err = await cli(
        "backup", "--out", str(tmp_path / "backups"), "--file", "compose/.env", env=live.env, cwd=checkout
    )
    backup_ended = time.monotonic()
    during = sum(1 for _, at in buyers.committed if backup_started <= at <= backup_ended)
    await eventually(
        lambda: len(buyers.committed) >= 20 + len([1 for _, at in buyers.committed if at <= backup_ended]),
        timeout=30,
        message="purchases after the backup",
    )
    buyers.stop.set()
    await asyncio.gather(*workers)
    assert code == 0, err
    assert during > 0, "no purchase was written while the backup ran"
    before = {pid for pid, at in buyers.committed if at < backup_started}
    archive = next((tmp_path / "backups").glob("localai_backup_*.tar.gz"))
    assert f"backup written: {archive}" in out

    fresh = tmp_path / "restored"
    new_checkout = tmp_path / "new-vps"
    new_checkout.mkdir()
    code, out, err = await cli("restore", str(archive), env=studio_env(fresh, ollama_double.url), cwd=new_checkout)
    assert code == 0, err

    db = fresh / "studio.db"
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    restored = {pid for (pid,) in rows(db, "SELECT id FROM purchases")}
    assert before <= restored, f"{len(before - restored)} committed purchases missing"
    assert restored <= {pid for pid, _ in buyers.committed}
    # One instant, whole transactions: every purchase has its purchase.completed in the outbox.
    outboxed = {
        json.loads(p)["data"]["purchase_id"]
        for (p,) in rows(db, "SELECT payload FROM outbox WHERE event_type = 'purchase.completed'")
    }
    assert restored == outboxed
    manifest = ops.read_manifest(archive)
    assert manifest["database"]["tables"]["purchases"] == len(restored)
    assert (fresh / "secret_key").read_bytes() == (tmp_path / "live" / "secret_key").read_bytes()
    assert (new_checkout / "compose" / ".env").read_text() == "STUDIO_ADMIN_TOKEN=op-secret\n"

    # A studio on the restored data dir knows a visitor who bought before the backup.
    visitor = sorted(before)[0]
    restored_studio = await run_studio(fresh, ollama_double.url)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(
            restored_studio.url + "/api/purchases", headers={"Cookie": f"studio_visitor={buyers.cookies[visitor]}"}
        ) as resp,
    ):
        assert resp.status == 200
        assert visitor in json.dumps(await resp.json())


# -- what restore refuses, and retention ---------------------------------------------------------


def make_database(data_dir: Path, n: int = 5) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_dir / "studio.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE purchases (id TEXT PRIMARY KEY, model TEXT NOT NULL)")
    conn.executemany("INSERT INTO purchases VALUES (?, ?)", [(f"pur_{i}", "tinyllama:latest") for i in range(n)])
    conn.commit()
    conn.close()
    return Settings.from_env({}, data_dir=data_dir)


def rewrite(archive: Path, target: Path, change) -> None:
    """Copy `archive` to `target`, passing each (TarInfo, bytes) through `change`."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(target, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            member, data = change(member, data)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def test_restore_refuses_a_damaged_archive_and_an_unsafe_one(tmp_path: Path) -> None:
    settings = make_database(tmp_path / "data")
    archive = ops.create_backup(settings, tmp_path / "backups", root=tmp_path).archive
    target = Settings.from_env({}, data_dir=tmp_path / "elsewhere")

    def flip_a_byte(member, data):
        if member.name == "data/studio.db":
            data = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]
        return member, data

    rewrite(archive, tmp_path / "damaged.tar.gz", flip_a_byte)
    with pytest.raises(ops.OpsError, match="checksum"):
        ops.restore_backup(target, tmp_path / "damaged.tar.gz", root=tmp_path)

    def miscount(member, data):
        if member.name == "manifest.json":
            manifest = json.loads(data)
            manifest["database"]["tables"]["purchases"] += 1
            manifest["database"].pop("sha256")
            data = json.dumps(manifest).encode()
        return member, data

    rewrite(archive, tmp_path / "miscounted.tar.gz", miscount)
    with pytest.raises(ops.OpsError, match="row counts differ"):
        ops.restore_backup(target, tmp_path / "miscounted.tar.gz", root=tmp_path)

    def escape(member, data):
        if member.name.startswith("catalog/"):
            member.name = "../../outside.json"
        return member, data

    rewrite(archive, tmp_path / "unsafe.tar.gz", escape)
    with pytest.raises(ops.OpsError, match="unsafe path"):
        ops.restore_backup(target, tmp_path / "unsafe.tar.gz", root=tmp_path)
    assert not (tmp_path / "outside.json").exists() and not (tmp_path / "elsewhere" / "studio.db").exists()


def test_restore_over_a_database_needs_force_and_keeps_the_old_one(tmp_path: Path) -> None:
    settings = make_database(tmp_path / "data", n=5)
    archive = ops.create_backup(settings, tmp_path / "backups", root=tmp_path).archive
    conn = sqlite3.connect(settings.database_path)
    conn.execute("INSERT INTO purchases VALUES ('pur_late', 'gemma2:2b')")  # after the backup
    conn.commit()
    conn.close()

    with pytest.raises(ops.OpsError, match="--force"):
        ops.restore_backup(settings, archive, root=tmp_path)
    result = ops.restore_backup(settings, archive, root=tmp_path, force=True)

    assert result.report.tables == {"purchases": 5}
    assert not settings.database_path.with_name("studio.db-wal").exists()
    (aside,) = [p for p in result.set_aside if p.name.endswith(tuple("0123456789"))]
    assert rows(aside, "SELECT count(*) FROM purchases") == [(6,)]


def test_backups_older_than_the_retention_are_removed_but_never_the_newest(tmp_path: Path) -> None:
    settings = make_database(tmp_path / "data")
    out = tmp_path / "backups"
    now = datetime(2026, 3, 20, 2, 0, tzinfo=UTC)
    for days in (3, 6, 8, 30):
        ops.create_backup(settings, out, root=tmp_path, keep_days=None, now=now - timedelta(days=days))
    (out / "notes.txt").write_text("not a backup")

    result = ops.create_backup(settings, out, root=tmp_path, keep_days=7, now=now)

    assert sorted(p.name for p in out.iterdir()) == [
        "localai_backup_20260314_020000.tar.gz",
        "localai_backup_20260317_020000.tar.gz",
        "localai_backup_20260320_020000.tar.gz",
        "notes.txt",
    ]
    assert len(result.removed) == 2
    old_only = tmp_path / "old"
    ops.create_backup(settings, old_only, root=tmp_path, keep_days=None, now=now - timedelta(days=40))
    assert ops.prune_backups(old_only, 7, now) == []  # the only backup there is stays
