"""Chat tokens/s with one Ollama node vs two behind one gateway, and what choosing a node costs.

    .venv/bin/python -m tests.bench.fleet_bench [--streams 16] [--rounds 3] [--tokens 40] [--rate 100]

Everything runs in its own process on loopback: nats-server, two Ollama stand-ins
(`tests.doubles.ollama`) that generate `--rate` tokens/s per answer and at most `--parallel` answers at
once (OLLAMA_NUM_PARALLEL: the rest wait in their queue), so Ollama is the bottleneck; and two studios
(gateway + chat embedded, `tests.bench.chat_serve`): one with STUDIO_OLLAMA_URLS naming one stand-in,
one naming both. Figures are from this one run:

1. Throughput: `--streams` visitors at once, each asking `--answers` answers one after another, through
   each studio in turn (interleaved over `--rounds`); tokens received / wall time, median of the rounds,
   and the ratio two nodes / one. Goal (issue #12): two nodes >= 1.8x one.
2. Time to first token straight from one stand-in (NDJSON) vs through each studio (SSE), with the
   stand-ins flat out: what choosing among two nodes adds over one (it is made from knowledge
   refreshed in the background, never a request to Ollama on the way). With `--baseline DIR` (a
   checkout from before fleets: `git worktree add /tmp/base <commit>`, then copy this branch's
   tests/bench/chat_serve.py into it), that studio is measured in the same run too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from events.server import NatsServer
from studio.app.runner import install_event_loop_policy
from tests.bench.chat_bench import (
    MODEL,
    SHORT_REPLY,
    Double,
    chat_body,
    pct,
    read_ndjson,
    read_sse,
    visitor_cookie,
)
from tests.bench.common import ROOT, process
from tests.bench.studio_process import wait_for_port
from tests.support import free_port

WORD = " word"


def start_double(port: int, parallel: int) -> subprocess.Popen[bytes]:
    args = ["--port", str(port), "--num-parallel", str(parallel), "--preinstall", MODEL, "--control"]
    proc = subprocess.Popen([sys.executable, "-m", "tests.doubles.ollama", *args], cwd=ROOT)
    wait_for_port(port)
    return proc


async def warm(session: aiohttp.ClientSession, url: str) -> None:
    """One answer straight from a stand-in: it holds the model in memory afterwards (/api/ps)."""
    async with session.post(url + "/api/chat", json=chat_body(stream=False)) as resp:
        assert resp.status == 200


async def throughput(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], streams: int, answers: int
) -> float:
    async def visitor() -> int:
        got = 0
        for _ in range(answers):
            got += (await read_sse(session, url, headers)).tokens
        return got

    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(visitor() for _ in range(streams))))
    return tokens / (time.perf_counter() - started)


async def bench(args: argparse.Namespace, doubles: list[str], one: str, two: str, before: str | None = None) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        stand_ins = [Double(u, session) for u in doubles]
        for d in stand_ins:
            await d.configure(args.rate, (WORD * args.tokens).strip())
            await warm(session, d.url)
        await asyncio.sleep(2.5)  # the studios' background refresh sees both holding the model (/api/ps)
        studios = (one, two) if before is None else (one, two, before)
        headers = {url: await visitor_cookie(session, url) for url in studios}
        for url in studios:
            await read_sse(session, url, headers[url])  # connections and code paths warm

        rates: dict[str, list[float]] = {"one node": [], "two nodes": []}
        for _ in range(args.rounds):
            for name, url in (("one node", one), ("two nodes", two)):
                rates[name].append(await throughput(session, url, headers[url], args.streams, args.answers))

        for d in stand_ins:
            await d.configure(0, SHORT_REPLY)
        targets: dict[str, Callable[[], Awaitable[object]]] = {
            "straight from Ollama": lambda: read_ndjson(session, doubles[0]),
            "studio, one node": lambda: read_sse(session, one, headers[one]),
            "studio, two nodes": lambda: read_sse(session, two, headers[two]),
        }
        if before is not None:
            targets["before fleets, one node"] = lambda: read_sse(session, before, headers[before])
        ttft: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.ttft_requests):  # interleaved, so drift hits both alike
            for name, target in targets.items():
                ttft[name].append((await target()).ttft)  # type: ignore[attr-defined]

    base = statistics.median(rates["one node"])
    print(
        f"\n1. Tokens/s through one gateway: {args.streams} visitors at once x {args.answers} answers of "
        f"{args.tokens} tokens; stand-ins at {args.rate:g} tokens/s per answer, {args.parallel} answers at once "
        f"each (median of {args.rounds} rounds)"
    )
    print(f"{'Ollama nodes':<14}{'tokens/s':>10}{'rounds':>28}{'ratio':>8}")
    for name, values in rates.items():
        mid = statistics.median(values)
        print(f"{name:<14}{mid:>10,.0f}{'  '.join(f'{v:,.0f}' for v in values):>28}{mid / base:>8.2f}")
    print(
        f"   ceiling of one stand-in: {args.rate * args.parallel:,.0f} tokens/s; goal: two nodes >= 1.8x one "
        f"-> {'met' if statistics.median(rates['two nodes']) >= 1.8 * base else 'NOT met'}"
    )
    straight = statistics.median(ttft["straight from Ollama"])
    print(f"\n2. Time to first token, {args.ttft_requests} requests each, interleaved, stand-ins flat out")
    print(f"{'target':<24}{'p50':>10}{'p99':>10}{'added p50':>11}")
    for name, values in ttft.items():
        mid = statistics.median(values)
        print(f"{name:<24}{mid * 1e3:>8.2f}ms{pct(values, 0.99) * 1e3:>8.2f}ms{(mid - straight) * 1e3:>+9.2f}ms")
    print("   (README's figure before fleets, on a quieter machine: +1.2 ms; node choice asks Ollama nothing)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=16, help="visitors chatting at once")
    parser.add_argument("--answers", type=int, default=3, help="answers each visitor asks for, one after another")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per answer")
    parser.add_argument("--rate", type=float, default=100, help="tokens/s of one answer on a stand-in")
    parser.add_argument("--parallel", type=int, default=2, help="answers a stand-in generates at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttft-requests", type=int, default=200)
    parser.add_argument("--baseline", type=Path, help="a checkout from before fleets, measured beside (see above)")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.streams, args.answers, args.tokens, args.rounds, args.ttft_requests = 2, 1, 5, 1, 3

    install_event_loop_policy()
    nats = NatsServer(Path(tempfile.mkdtemp()) / "nats", port=free_port())
    asyncio.run(nats.start())
    ports = [free_port(), free_port()]
    doubles = [start_double(p, args.parallel) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        one_port, two_port, base_port = free_port(), free_port(), free_port()
        serve = ("-m", "tests.bench.chat_serve", "embedded")
        with contextlib.ExitStack() as stack:
            stack.enter_context(process(*serve, str(one_port), nats.url, urls[0], ready="ready"))
            stack.enter_context(process(*serve, str(two_port), nats.url, ",".join(urls), ready="ready"))
            before = None
            if args.baseline is not None:
                stack.enter_context(
                    process(*serve, str(base_port), nats.url, urls[0], ready="ready", cwd=args.baseline.resolve())
                )
                before = f"http://127.0.0.1:{base_port}"
            one, two = f"http://127.0.0.1:{one_port}", f"http://127.0.0.1:{two_port}"
            asyncio.run(bench(args, urls, one, two, before))
    finally:
        for proc in doubles:
            proc.terminate()
            proc.wait(10)
        nats.stop()


if __name__ == "__main__":
    main()
