"""Does the studio stay fast and small as purchases pile up?

    .venv/bin/python -m tests.bench.growth_bench [--purchases 100000] [--buyers 16]

A whole studio (`localai-studio up`, test mode, the Ollama stand-in): GET /api/models and
GET /api/purchases p50 (sequential, one visitor who owns every model) and the restart time, empty;
then `--purchases` purchases through the API; once every consumer caught up, the same figures again,
the data per purchase, and the same after a restart with STUDIO_OUTBOX_KEEP_DAYS set tiny (the
published outbox rows pruned at start-up). Goals: p50 within 1.5x of empty, restart under 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from events.bus import Bus
from events.lag import consumer_lags
from studio.app.runner import install_event_loop_policy
from tests.bench.studio_process import MODELS, Studio, buyers, first_visit, ollama_double, visitor


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def db_facts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        facts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("purchases", "outbox")}
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
        facts["live_bytes"] = (pages - free) * size
        facts["file_bytes"] = path.stat().st_size
        return facts
    finally:
        conn.close()


async def p50_ms(session, url: str, n: int = 300) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def caught_up(studio: Studio, timeout: float = 600) -> float:
    bus = Bus(studio.nats_url, name="bench-growth", source="/bench", login=studio.nats_login())
    await bus.connect()
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout:
            if all(x.pending + x.ack_pending == 0 for x in await consumer_lags(bus, timeout=10)):
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
        raise RuntimeError("the consumers did not catch up")
    finally:
        await bus.close(1)


async def outbox_pruned(db: Path, timeout: float = 120) -> dict[str, int]:
    """The database's figures once the start-up pruning has emptied the outbox (or `timeout` passed)."""
    deadline = time.monotonic() + timeout
    facts = db_facts(db)
    while facts["outbox"] > 100 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # polling a file another process writes
        facts = db_facts(db)
    return facts


async def figures(studio: Studio, session) -> dict[str, float]:
    return {
        "models_ms": await p50_ms(session, f"{studio.url}/api/models"),
        "purchases_ms": await p50_ms(session, f"{studio.url}/api/purchases"),
    }


def restart(studio: Studio, **extra: str) -> float:
    studio.stop()
    studio.extra.update(extra)
    return studio.start()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, ollama_double() as ollama_url:
        data = Path(tmp) / "data"
        studio = Studio(data, ollama_url)
        studio.start()
        try:
            async with visitor() as me:
                await first_visit(me, studio.url)
                for model in MODELS:  # the visitor measured owns every model, before and after
                    async with me.post(f"{studio.url}/api/models/purchase/{model}") as resp:
                        assert resp.status == 200
                await caught_up(studio)
                empty = await figures(studio, me)
                empty_restart = restart(studio)
                before = db_facts(data / "studio.db")

                started = time.perf_counter()
                bought = await buyers(studio.url, args.buyers, total=args.purchases)
                rate = bought / (time.perf_counter() - started)
                drain = await caught_up(studio)
                full = await figures(studio, me)
                facts = db_facts(data / "studio.db")
                nats_bytes = dir_bytes(data / "nats")
                full_restart = restart(studio)
                pruned_restart = restart(studio, STUDIO_OUTBOX_KEEP_DAYS="0.00001")  # ~1 s: all published go
                pruned = await outbox_pruned(data / "studio.db")
                after_pruning = await figures(studio, me)
        finally:
            studio.stop()

    n = bought
    print(f"{n:,} purchases through the API by {args.buyers} visitors: {rate:,.0f}/s")
    print(f"every consumer caught up {drain:.1f} s after the last one")
    print(f"\n{'':34} {'empty':>9} {f'{n:,} purchases':>16} {'ratio':>6}")
    for key, label in (("models_ms", "GET /api/models p50 ms"), ("purchases_ms", "GET /api/purchases p50 ms")):
        print(f"{label:34} {empty[key]:9.2f} {full[key]:16.2f} {full[key] / empty[key]:6.2f}")
        pruned_ms = after_pruning[key]
        print(f"{'  after pruning the outbox':34} {'':9} {pruned_ms:16.2f} {pruned_ms / empty[key]:6.2f}")
    print(f"{'restart s':34} {empty_restart:9.2f} {full_restart:16.2f} {full_restart / empty_restart:6.2f}")
    print(f"{'  restart that prunes':34} {'':9} {pruned_restart:16.2f}")
    grown = facts["live_bytes"] - before["live_bytes"]
    print(
        f"\ndata: purchases {facts['purchases']:,} rows, outbox {facts['outbox']:,} rows (within the 7-day window); "
        f"database {facts['file_bytes'] / 1e6:.1f} MB on disk, {grown / n:,.0f} bytes of live data a purchase; "
        f"JetStream store {nats_bytes / 1e6:.1f} MB ({nats_bytes / n:,.0f} bytes a purchase)"
    )
    pruned_grown = pruned["live_bytes"] - before["live_bytes"]
    print(
        f"after pruning: outbox {pruned['outbox']:,} rows; {pruned_grown / n:,.0f} bytes of live data a purchase "
        f"(the file keeps its size: SQLite reuses the freed pages)"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--purchases", type=int, default=100_000)
    p.add_argument("--buyers", type=int, default=16)
    install_event_loop_policy()
    p.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = p.parse_args()
    if args.smoke:
        args.purchases, args.buyers = 200, 4
    asyncio.run(main(args))
