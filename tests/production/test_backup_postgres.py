"""Backups of a studio on PostgreSQL (`pg_dump -Fc`) taken while purchases are written, and restores
(`pg_restore --clean`) checked, with real processes: `localai-studio up` on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from studio.app import ops
from tests.production.test_backup import Buyers, cli, ollama_double, run_studio, studio_env
from tests.support import eventually

pytestmark = pytest.mark.postgres
__all__ = ["ollama_double", "run_studio"]  # fixtures shared with test_backup.py


async def ids(url: str, sql: str) -> set[Any]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch(sql)}
    finally:
        await conn.close()


async def test_backup_of_a_postgres_studio_restores_every_committed_purchase(
    tmp_path: Path, ollama_double, run_studio, postgres_server
) -> None:
    live_url = postgres_server.new_database()
    live = await run_studio(tmp_path / "live", ollama_double.url, STUDIO_DATABASE_URL=live_url)
    buyers = Buyers(live.url)
    workers = [asyncio.create_task(buyers.buy(i)) for i in range(4)]
    await eventually(lambda: len(buyers.committed) >= 30, timeout=30, message="purchases before the backup")
    backup_started = time.monotonic()
    code, out, err = await cli("backup", "--out", str(tmp_path / "backups"), env=live.env, cwd=tmp_path)
    backup_ended = time.monotonic()
    await eventually(
        lambda: any(at > backup_ended for _, at in buyers.committed), timeout=30, message="purchases after the backup"
    )
    buyers.stop.set()
    await asyncio.gather(*workers)
    assert code == 0, err
    before = {pid for pid, at in buyers.committed if at < backup_started}
    archive = next((tmp_path / "backups").glob("localai_backup_*.tar.gz"))
    manifest = ops.read_manifest(archive)
    assert manifest["database"]["engine"] == "postgresql" and manifest["database"]["path"] == "data/studio.pgdump"
    assert manifest["database"]["integrity"] == "ok" and "integrity ok" in out

    # A new server: an empty database, the archive restored into it with the studio's own command.
    fresh_url = postgres_server.new_database()
    fresh_env = studio_env(tmp_path / "restored", ollama_double.url, STUDIO_DATABASE_URL=fresh_url)
    code, out, err = await cli("restore", "--check", str(archive), env=fresh_env, cwd=tmp_path)
    assert code == 0 and "checked:" in out, err
    code, out, err = await cli("restore", str(archive), env=fresh_env, cwd=tmp_path)
    assert code == 0, err
    restored = await ids(fresh_url, "SELECT id FROM purchases")
    assert before <= restored, f"{len(before - restored)} committed purchases missing"
    assert len(restored) == manifest["database"]["tables"]["purchases"]
    # One snapshot, whole transactions: every purchase has its purchase.completed in the outbox.
    outboxed = {
        json.loads(bytes(p))["data"]["purchase_id"]
        for p in await ids(fresh_url, "SELECT payload FROM outbox WHERE event_type = 'purchase.completed'")
    }
    assert restored == outboxed

    # A studio on the restored database knows a visitor who bought before the backup.
    visitor = sorted(before)[0]
    restored_studio = await run_studio(tmp_path / "restored", ollama_double.url, STUDIO_DATABASE_URL=fresh_url)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(
            restored_studio.url + "/api/purchases", headers={"Cookie": f"studio_visitor={buyers.cookies[visitor]}"}
        ) as resp,
    ):
        assert resp.status == 200
        assert visitor in json.dumps(await resp.json())


async def test_restore_over_a_database_with_data_needs_force_and_keeps_the_old_data(
    tmp_path: Path, ollama_double, run_studio, postgres_server
) -> None:
    url = postgres_server.new_database()
    live = await run_studio(tmp_path / "live", ollama_double.url, STUDIO_DATABASE_URL=url)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await session.get(live.url + "/api/models")
        async with session.post(live.url + "/api/models/purchase/tinyllama:latest") as resp:
            assert resp.status == 200
        code, _, err = await cli("backup", "--out", str(tmp_path / "backups"), env=live.env, cwd=tmp_path)
        assert code == 0, err
        async with session.post(live.url + "/api/models/purchase/llama3.2:1b") as resp:
            assert resp.status == 200  # after the backup: the restore takes it away
    live.proc.terminate()
    await live.proc.wait()
    archive = next((tmp_path / "backups").glob("localai_backup_*.tar.gz"))

    code, _, err = await cli("restore", str(archive), env=live.env, cwd=tmp_path)
    assert code == 1 and "holds data" in err and "--force" in err
    assert len(await ids(url, "SELECT id FROM purchases")) == 2, "refused: nothing changed"
    code, out, err = await cli("restore", "--force", str(archive), env=live.env, cwd=tmp_path)
    assert code == 0, err
    assert await ids(url, "SELECT model FROM purchases") == {"tinyllama:latest"}
    kept = list((tmp_path / "live").glob("studio.pgdump.before-restore-*"))
    assert len(kept) == 1 and f"previous database kept as {kept[0]}" in out

    code, _, err = await cli(
        "restore", str(archive), env=studio_env(tmp_path / "lite", ollama_double.url), cwd=tmp_path
    )
    assert code == 1 and "STUDIO_DATABASE_URL" in err, "a PostgreSQL backup is not put into a SQLite data dir"
