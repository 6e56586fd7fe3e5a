"""What the distributed gateway's hop costs its client: studio.clients.upstream vs. aiohttp's ClientSession.

    .venv/bin/python -m tests.bench.upstream_bench [--requests 20000] [--rounds 5]

The ping function runs in its own process (as its container would); this process sends it GETs
through each client, 50 in flight and one at a time, on uvloop as the gateway runs, and reads this
process's CPU time per request: what the proxy would spend on the hop, the function's own work
excluded. aiohttp's client (one shared session, keep-alive, the usual way) is the baseline; the
ratio is studio.clients.upstream's CPU per request over aiohttp's. Medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from events.server import NatsServer
from studio.app.runner import install_event_loop_policy
from studio.clients.upstream import UpstreamPool
from tests.bench.common import process
from tests.support import free_port

Get = Callable[[], Awaitable[bytes]]


async def cpu_us_per_request(get: Get, requests: int, in_flight: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            body = await get()
            assert body == b'{"pong": true}', body

    each = requests // in_flight
    started = time.process_time()
    await asyncio.gather(*(worker(each) for _ in range(in_flight)))
    return (time.process_time() - started) / (each * in_flight) * 1e6


async def measure(port: int, requests: int, rounds: int) -> dict[str, dict[int, float]]:
    pool = UpstreamPool("127.0.0.1", port)
    session = aiohttp.ClientSession()
    url = f"http://127.0.0.1:{port}/api/ping"

    async def with_upstream() -> bytes:
        resp = await pool.request("GET", "/api/ping", [], None)
        try:
            return await resp.read()
        finally:
            resp.release()

    async def with_aiohttp() -> bytes:
        async with session.get(url) as resp:
            return await resp.read()

    clients: dict[str, Get] = {"aiohttp ClientSession": with_aiohttp, "studio.clients.upstream": with_upstream}
    runs: dict[str, dict[int, list[float]]] = {name: {50: [], 1: []} for name in clients}
    try:
        for get in clients.values():
            await cpu_us_per_request(get, requests // 10, 50)  # warm-up, connections opened
        for _ in range(rounds):
            for name, get in clients.items():
                for in_flight in (50, 1):
                    runs[name][in_flight].append(await cpu_us_per_request(get, requests, in_flight))
    finally:
        await session.close()
        await pool.close()
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds = 500, 1
    install_event_loop_policy()
    nats = NatsServer(Path(tempfile.mkdtemp()) / "nats", port=free_port())
    asyncio.run(nats.start())
    try:
        port = free_port()
        with process("-m", "tests.bench.serve", "function", str(port), nats.url, ready="ready"):
            results = asyncio.run(measure(port, args.requests, args.rounds))
    finally:
        nats.stop()
    base = results["aiohttp ClientSession"]
    print(f"\nclient CPU per request, medians of {args.rounds} interleaved rounds of {args.requests:,} requests")
    print(f"{'client':<24}{'us @50':>9}{'ratio':>7}{'us @1':>9}{'ratio':>7}")
    for name, r in results.items():
        print(f"{name:<24}{r[50]:>9.1f}{r[50] / base[50]:>7.2f}{r[1]:>9.1f}{r[1] / base[1]:>7.2f}")


if __name__ == "__main__":
    main()
