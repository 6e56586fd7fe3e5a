"""What the gateway costs: a light JSON endpoint straight to the function vs. through the gateway.

    .venv/bin/python -m tests.bench.gateway_bench [--seconds 5]

Three targets, each in its own process, measured in one run with wrk (needs `apt-get install wrk`):
direct (the function's own server), embedded gateway (function in-process), proxied gateway
(gateway -> function over HTTP). Throughput at 50 connections, latency at 1 connection; ratios are
against direct. Goals: embedded >= 85 % of direct, proxied >= 50 %, < 0.3 ms added p50 unloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import urllib.request
from pathlib import Path

from events.server import NatsServer
from tests.bench.common import process, wrk
from tests.support import free_port


def visitor_cookie(url: str) -> str:
    with urllib.request.urlopen(url) as resp:
        return resp.headers["Set-Cookie"].split(";", 1)[0]


def measure(url: str, seconds: float, headers: dict[str, str]) -> dict[str, float]:
    loaded = wrk(url, connections=50, seconds=seconds, headers=headers)
    single = wrk(url, connections=1, seconds=max(2.0, seconds / 2), headers=headers)
    assert loaded.errors == 0 and single.errors == 0, f"{url}: errors during the run"
    return {
        "rps": loaded.rps,
        "p50_50c": loaded.p50_ms,
        "p99_50c": loaded.p99_ms,
        "p50_1c": single.p50_ms,
        "p99_1c": single.p99_ms,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="targets are measured in turn, this many times")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 1.0, 1

    nats = NatsServer(Path(tempfile.mkdtemp()) / "nats", port=free_port())
    asyncio.run(nats.start())
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "embedded gateway": [], "proxied gateway": []}
    try:
        fport, eport, pport = free_port(), free_port(), free_port()
        serve = ("-m", "tests.bench.serve")
        with (
            process(*serve, "function", str(fport), nats.url, ready="ready"),
            process(*serve, "proxied", str(pport), nats.url, f"http://127.0.0.1:{fport}", ready="ready"),
            process(*serve, "embedded", str(eport), nats.url, ready="ready"),
        ):
            targets = {
                "direct": (f"http://127.0.0.1:{fport}/api/ping", {}),
                "embedded gateway": (url := f"http://127.0.0.1:{eport}/api/ping", {"Cookie": visitor_cookie(url)}),
                "proxied gateway": (url := f"http://127.0.0.1:{pport}/api/ping", {"Cookie": visitor_cookie(url)}),
            }
            for url, headers in targets.values():
                wrk(url, connections=50, seconds=1, headers=headers)  # warm-up
            for _ in range(args.rounds):
                for name, (url, headers) in targets.items():
                    runs[name].append(measure(url, args.seconds, headers))
    finally:
        nats.stop()

    results = {name: median_of(r) for name, r in runs.items()}
    base = results["direct"]
    print(f"\nmedians of {args.rounds} interleaved rounds, {args.seconds:g} s each")
    print(
        f"{'target':<18}{'req/s @50':>11}{'ratio':>8}{'p50 @50':>10}{'p99 @50':>10}"
        f"{'p50 @1':>9}{'p99 @1':>9}{'+p50 @1':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:<18}{r['rps']:>11,.0f}{r['rps'] / base['rps']:>8.2f}{r['p50_50c']:>8.2f}ms"
            f"{r['p99_50c']:>8.2f}ms{r['p50_1c']:>7.3f}ms{r['p99_1c']:>7.3f}ms"
            f"{r['p50_1c'] - base['p50_1c']:>+7.3f}ms"
        )
    print("\ngoals: embedded >= 0.85 of direct, proxied >= 0.50, added p50 at 1 connection < 0.3 ms")


if __name__ == "__main__":
    main()
