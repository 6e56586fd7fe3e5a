"""`localai-studio db copy`: a studio's SQLite database into PostgreSQL, run as the operator runs it,
then the studio started on PostgreSQL shows the same owners, purchases and install states."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from studio.runtime.dialect import DatabaseUrl
from tests.functions.pipeline import OPERATOR, start_studio

pytestmark = pytest.mark.postgres
CLI = str(Path(sys.executable).parent / "localai-studio")


async def cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def what_visitors_see(base: str, visitors: list[aiohttp.ClientSession]) -> dict[str, Any]:
    """Each visitor's models (owned, install state) and purchases; the operator's list of purchases."""
    seen: dict[str, Any] = {}
    for i, visitor in enumerate(visitors):
        async with visitor.get(f"{base}/api/models") as resp:
            assert resp.status == 200
            models = (await resp.json())["models"]
        async with visitor.get(f"{base}/api/purchases") as resp:
            assert resp.status == 200
            purchases = (await resp.json())["purchases"]
        seen[f"visitor{i}"] = {
            "models": sorted((m["id"], m["owned"], m["install"]["state"]) for m in models),
            "purchases": sorted((p["id"], p["model"], p["status"]) for p in purchases),
        }
    async with visitors[0].get(f"{base}/api/purchases?all=1", headers=OPERATOR) as resp:
        assert resp.status == 200
        seen["operator"] = sorted(
            (p["id"], p["user_id"], p["model"], p["status"]) for p in (await resp.json())["purchases"]
        )
    return seen


async def test_a_sqlite_studio_copied_to_postgres_shows_the_same_owners_purchases_and_installs(
    embedded_studio, settings, ollama, stripe_api, bus, postgres_url
) -> None:
    studio = await start_studio(embedded_studio, settings, ollama, stripe_api, bus, skip_payment=True)
    base = str(studio.client.make_url("")).rstrip("/")
    visitors = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(2)]
    try:
        for visitor, models in zip(visitors, (["llama3.2:3b", "tinyllama:latest"], ["tinyllama:latest"]), strict=True):
            async with visitor.get(f"{base}/api/models") as first:
                assert first.status == 200
            for model in models:
                async with visitor.post(f"{base}/api/models/purchase/{model}") as resp:
                    assert resp.status == 200, await resp.text()
        await studio.wait_for_event("install.completed", "llama3.2:3b")
        await studio.wait_for_event("install.completed", "tinyllama:latest")
        before = await what_visitors_see(base, visitors)
        assert [m for m in before["visitor0"]["models"] if m[1]] == [
            ("llama3.2:3b", True, "installed"),
            ("tinyllama:latest", True, "installed"),
        ]
        assert len(before["operator"]) == 3
        await studio.client.host_runtime.stop()  # the operator stops the studio before copying
        sqlite_file = settings.database_path

        code, out, err = await cli("db", "copy", "--from", f"sqlite:///{sqlite_file}", "--to", postgres_url)
        assert code == 0, err
        assert "purchases: 3 rows" in out and "row counts match; ownership records match (purchases 3" in out
        again, _, err = await cli("db", "copy", "--from", f"sqlite:///{sqlite_file}", "--to", postgres_url)
        assert again == 1 and "the target is not empty" in err and "--overwrite" in err
        overwritten, out, err = await cli(
            "db", "copy", "--from", f"sqlite:///{sqlite_file}", "--to", postgres_url, "--overwrite"
        )
        assert overwritten == 0 and "replaced the target's data in" in out, err

        sqlite_file.rename(sqlite_file.with_name("studio.db.copied"))  # the studio on PostgreSQL cannot read it
        on_pg = settings.replace(database_url=DatabaseUrl.parse(postgres_url))
        moved = await start_studio(embedded_studio, on_pg, ollama, stripe_api, bus, skip_payment=True)
        base = str(moved.client.make_url("")).rstrip("/")
        after = await what_visitors_see(base, visitors)
    finally:
        for visitor in visitors:
            await visitor.close()
    assert after == before
    assert not settings.database_path.exists(), "the studio used PostgreSQL, not a new SQLite file"


async def test_copy_refuses_a_source_that_is_not_a_studio_database(tmp_path: Path, postgres_url) -> None:
    code, _, err = await cli("db", "copy", "--from", str(tmp_path / "nothing.db"), "--to", postgres_url)
    assert code == 1 and "there is no database at" in err
    code, _, err = await cli("db", "copy", "--from", f"sqlite:///{tmp_path}/x.db", "--to", "mysql://h/db")
    assert code == 1 and "expected sqlite:///studio.db or postgresql://" in err
