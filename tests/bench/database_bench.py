"""SQLite vs PostgreSQL under the same studio: purchase -> pull latency and catalog requests/s, one run.

    .venv/bin/python -m tests.bench.database_bench [--purchases 200] [--seconds 5] [--concurrency 16]

For each database, a whole studio (`localai-studio up`, its own NATS) with a catalog of `--purchases`
free models (plus 10 for warm-up) and the Ollama stand-in (separate processes, instant pulls):

1. purchase -> pull: one visitor buys the models one after another; each latency runs from sending
   POST /api/models/purchase/{model} to `install.started` arriving on the bus (the install function
   commits it, with its lease, just before it calls Ollama's /api/pull). The path crosses the purchase
   transaction, the outbox relay, install's consumer, the lease claim and install's own transaction.
   p50/p99 over `--purchases`. Goal on PostgreSQL: p99 under 20 ms (as on SQLite).
2. catalog: `--concurrency` clients GET /api/models (the marketplace page's data: catalog, ownership,
   install states) for `--seconds`; requests/s.

PostgreSQL is a real server (Debian's package, tests/postgres.py) on this machine, fsync on as in
production (the test suite turns it off; a benchmark must not). Ratios are PostgreSQL / SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from events.bus import Bus
from events.envelope import Event
from tests.bench.common import ROOT
from tests.bench.studio_process import Studio, visitor, wait_for_port
from tests.postgres import PostgresServer, postgres_bin
from tests.support import free_port

WARMUP = 10


def write_catalog(path: Path, n: int) -> list[str]:
    names = [f"bench{i}:latest" for i in range(n)]
    entry = {
        "family": "llama",
        "parameter_size": "1B",
        "description": "A benchmark model.",
        "download_bytes": 50_000,
        "ram_bytes": 1 << 20,
        "license": "MIT",
        "price_cents": 0,
        "currency": "usd",
        "capabilities": ["completion"],
        "context_length": 4096,
        "quantization": "Q4_0",
    }
    path.write_text(json.dumps({"models": [{"id": m, "name": m, **entry} for m in names]}))
    return names


def start_double(names: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [sys.executable, "-m", "tests.doubles.ollama", "--port", str(port), "--pull-interval", "0.001"]
    proc = subprocess.Popen([*args, *(x for m in names for x in ("--model", f"{m}=50000"))], cwd=ROOT)
    wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def purchase_to_pull(studio: Studio, names: list[str]) -> list[float]:
    started: dict[str, asyncio.Future[float]] = {}
    loop = asyncio.get_running_loop()

    async def on_started(event: Event, *_: Any) -> None:
        waiting = started.get(event.data.get("model", ""))
        if waiting is not None and not waiting.done():
            waiting.set_result(time.perf_counter())

    bus = Bus(studio.nats_url, name="bench-database", source="/bench", login=studio.nats_login())
    await bus.connect()
    await bus.listen("install.started", on_started)
    await bus.flush()
    latencies = []
    try:
        async with visitor() as session:
            async with session.get(f"{studio.url}/api/models") as first:
                assert first.status == 200
            for i, model in enumerate(names):
                started[model] = loop.create_future()
                sent = time.perf_counter()
                async with session.post(f"{studio.url}/api/models/purchase/{model}") as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"purchase answered {resp.status}: {body[:300]!r}")
                at = await asyncio.wait_for(started[model], 30)
                if i >= WARMUP:
                    latencies.append((at - sent) * 1000)
    finally:
        await bus.close(0)
    return latencies


async def catalog_rps(url: str, seconds: float, concurrency: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            while time.perf_counter() < deadline:
                async with session.get(f"{url}/api/models") as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"catalog answered {resp.status}")
                    done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def measure(label: str, work: Path, names: list[str], args: argparse.Namespace, extra: dict[str, str]) -> dict:
    double, ollama_url = start_double(names)
    studio = Studio(
        work / f"data-{label}",
        ollama_url,
        extra={
            "STUDIO_CATALOG": str(work / "catalog.json"),
            "STUDIO_WRITES_PER_ADDRESS_PER_MINUTE": "1000000",
            "STUDIO_SERVER_MEMORY_BYTES": str(1 << 40),
            **extra,
        },
    )
    try:
        studio.start()
        latencies = asyncio.run(purchase_to_pull(studio, names))
        rps = asyncio.run(catalog_rps(studio.url, args.seconds, args.concurrency))
    finally:
        studio.stop()
        double.terminate()
        double.wait(10)
    return {
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
        "rps": rps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purchases", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL with fsync off (to see what fsync costs)")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.purchases, args.seconds, args.concurrency = 10, 0.5, 2
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is needed for this benchmark: apt-get install postgresql")
    with tempfile.TemporaryDirectory(prefix="database-bench-") as tmp:
        work = Path(tmp)
        names = write_catalog(work / "catalog.json", args.purchases + WARMUP)
        server = PostgresServer(bin_dir, durable=not args.no_fsync).start()
        try:
            pg_url = server.new_database("bench")
            results = {
                "SQLite": measure("sqlite", work, names, args, {}),
                "PostgreSQL": measure("postgres", work, names, args, {"STUDIO_DATABASE_URL": pg_url}),
            }
        finally:
            server.stop()
    lite, pg = results["SQLite"], results["PostgreSQL"]
    print(
        f"\n{args.purchases} purchases -> pull (install.started), catalog {args.concurrency} clients {args.seconds:g} s"
    )
    print(f"{'':34} {'SQLite':>10} {'PostgreSQL':>12} {'PG/SQLite':>10}")
    rows = [
        ("purchase -> pull p50 (ms)", "p50"),
        ("purchase -> pull p99 (ms)", "p99"),
        ("purchase -> pull max (ms)", "max"),
        ("catalog GET /api/models (req/s)", "rps"),
    ]
    for title, key in rows:
        print(f"{title:34} {lite[key]:10.1f} {pg[key]:12.1f} {pg[key] / lite[key]:9.2f}x")
    verdict = "met" if pg["p99"] < 20 else "NOT met"
    print(f"goal: PostgreSQL purchase -> pull p99 under 20 ms: {verdict} ({pg['p99']:.1f} ms)")


if __name__ == "__main__":
    main()
