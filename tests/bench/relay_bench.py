"""What the relay adds to a token stream, every dialect side by side, in one run (issue 25).

    .venv/bin/python -m tests.bench.relay_bench [--ttft-requests 60] [--streams 50] [--tokens 300]
        [--rounds 3] [--litellm PATH] [--baseline DIR] [--markdown docs/benchmarks.md] [--smoke]

Processes on loopback: nats-server, the Ollama stand-in (`tests.bench.chat_serve ollama`, token delay 0),
and the studio embedded with accounts, purchase and chat (`chat_serve store`). A buyer signs up, buys a
paid model (payment skipped) and makes a personal API key: `/api/chat` is asked with the buyer's session,
every `/v1` dialect with the key, so each answer takes the whole path (session or key, ownership, limits,
the node, the relay, the usage event). Targets, each measured against direct Ollama in this run:

    direct Ollama            the stand-in's NDJSON
    /api/chat                the studio's SSE
    /v1/chat/completions     OpenAI's chunks
    /v1/responses            OpenAI's Responses events      ("not served" where the studio answers 404)
    /v1/messages             Anthropic's Messages events    (likewise)
    /v1/completions          OpenAI's legacy completions    (likewise)
    LiteLLM proxy            `--litellm` = the `litellm` executable of a venv with litellm[proxy]
                             (default: .venv-litellm/bin/litellm when it is there; one worker,
                             ollama_chat/<model>); "not installed" without it
    before: ...              with `--baseline DIR` (a checkout of an older commit, e.g.
                             `git archive <commit> | tar -x -C DIR`), that studio too, in the same run

Figures: first token p50/p99 over `--ttft-requests` sequential requests (interleaved across targets, short
replies), first token p50/p99 when `--streams` requests arrive at once (a burst), tokens/s with `--streams`
concurrent streams of `--tokens` tokens (flat out), and the serving process's CPU per 1,000 tokens. Added
time and ratios are against direct Ollama in the same run; medians of `--rounds` rounds. `--markdown` writes
the table, with the machine and date, into that file (between its `relay_bench` markers).

Goals (issue 25): first token added <= 1.0 ms p50 on /api/chat and every /v1 dialect; <= 10 ms under the
burst; >= 0.80 of direct tokens/s at 50 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from events.server import NatsServer
from studio.app.runner import install_event_loop_policy
from tests.bench.accounts_bench import LITELLM_KEY, litellm_proxy, wait_until_up
from tests.bench.chat_bench import SHORT_REPLY, Double, Stream, pct, reply_of
from tests.bench.chat_serve import PAID_MODEL
from tests.bench.common import ROOT, process
from tests.support import free_port

PASSWORD = "correct horse battery"
PROMPT = "Tell me a story."
START, END = "<!-- relay_bench:start -->", "<!-- relay_bench:end -->"


@dataclass(frozen=True)
class Dialect:
    """How to ask one API for a streamed answer and how to count its tokens in what comes back."""

    path: str
    body: dict[str, object]
    token: bytes  # occurs once per token in the stream
    done: bytes  # occurs once, at the end


DIALECTS = {
    "direct Ollama": Dialect(
        "/api/chat", {"messages": [{"role": "user", "content": PROMPT}], "stream": True}, b'"content":', b'"done":true'
    ),
    "/api/chat": Dialect(
        "/api/chat",
        {"messages": [{"role": "user", "content": PROMPT}], "stream": True},
        b"event: token",
        b"event: done",
    ),
    "/v1/chat/completions": Dialect(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": PROMPT}], "stream": True},
        b'"content":',
        b"data: [DONE]",
    ),
    "/v1/responses": Dialect(  # (the event line only: its data names its type too)
        "/v1/responses",
        {"input": PROMPT, "stream": True},
        b"event: response.output_text.delta\n",
        b"response.completed",
    ),
    "/v1/messages": Dialect(
        "/v1/messages",
        {"max_tokens": 100_000, "messages": [{"role": "user", "content": PROMPT}], "stream": True},
        b'"text_delta"',
        b"message_stop",
    ),
    "/v1/completions": Dialect("/v1/completions", {"prompt": PROMPT, "stream": True}, b'"text":', b"data: [DONE]"),
}
LITELLM = "LiteLLM proxy"
LITELLM_VENV = ROOT / ".venv-litellm"  # python3 -m venv .venv-litellm && .venv-litellm/bin/pip install 'litellm[proxy]'


async def read(session: aiohttp.ClientSession, url: str, dialect: Dialect, headers: dict[str, str]) -> Stream:
    """One streamed answer: the time to its first token (the first chunk holding one), tokens, duration."""
    t0 = time.perf_counter()
    first, tokens, done, tail = 0.0, 0, False, b""
    keep = max(len(dialect.token), len(dialect.done)) - 1
    body = {"model": PAID_MODEL, **dialect.body}
    async with session.post(url + dialect.path, json=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{dialect.path} answered {resp.status}: {(await resp.text())[:300]}")
        async for chunk in resp.content.iter_any():
            window = tail + chunk
            found = window.count(dialect.token)
            if found and not first:
                first = time.perf_counter()
            tokens += found
            done = done or dialect.done in window
            tail = window[-keep:]
    if not done:
        raise RuntimeError(f"{dialect.path}: the stream ended without its end marker")
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def served(session: aiohttp.ClientSession, url: str, dialect: Dialect, headers: dict[str, str]) -> bool:
    body = {"model": PAID_MODEL, **dialect.body}
    async with session.post(url + dialect.path, json=body, headers=headers) as resp:
        text = await resp.text()  # no route: 404, or 403 `key_not_allowed` from a studio before issue 23
        return resp.status != 404 and "key_not_allowed" not in text


async def buyer(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Sign up, buy the paid model, make a key: (the session's cookie header, the key's headers)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(
            url + "/api/auth/signup", json={"email": "bench@example.com", "password": PASSWORD}
        ) as r:
            assert r.status == 201, await r.text()
        async with browser.post(url + f"/api/models/purchase/{PAID_MODEL}") as r:
            assert r.status == 200, await r.text()
        async with browser.post(url + "/api/account/keys", json={"name": "bench"}) as r:
            assert r.status == 201, await r.text()
            key = (await r.json())["key"]
        cookie = {"Cookie": "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar)}
    return cookie, {"Authorization": f"Bearer {key}", "x-api-key": key}


@dataclass
class Target:
    name: str
    one: Callable[[], Awaitable[Stream]]
    pids: list[int]


def cpu_ns(pids: list[int]) -> int:
    """CPU time the processes have used, in ns, from the scheduler's own count (every thread's
    `/proc/PID/task/TID/schedstat`): utime and stime come in 10 ms ticks, as coarse as a whole run here."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[0])
    return total


async def burst(n: int, one: Callable[[], Awaitable[Stream]]) -> list[Stream]:
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def measure(double: Double, targets: list[Target], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}

    def add(name: str, key: str, *values: float) -> None:
        out[name].setdefault(key, []).extend(values)

    await double.configure(0, SHORT_REPLY)
    for t in targets:  # warm up connections and code paths
        for _ in range(3):
            await t.one()
    for k in range(args.rounds):
        order = targets[k % len(targets) :] + targets[: k % len(targets)]  # drift hits every target alike
        await double.configure(0, SHORT_REPLY)
        for _ in range(args.ttft_requests):
            for t in order:
                add(t.name, "ttft", (await t.one()).ttft)
        for t in order:
            ttfts = [s.ttft for s in await burst(args.streams, t.one)]
            add(t.name, "burst_p50", statistics.median(ttfts))
            add(t.name, "burst_p99", pct(ttfts, 0.99))
        await double.configure(0, reply_of(args.tokens))
        for t in order:  # `--rate-runs` runs of `--streams` streams in a row: one run is ~0.1 s, too short alone
            before, ollama_before, client_before = cpu_ns(t.pids), cpu_ns([args.ollama_pid]), cpu_ns([os.getpid()])
            wall, tokens = 0.0, 0
            for _ in range(args.rate_runs):
                t0 = time.perf_counter()
                done = await burst(args.streams, t.one)
                wall += time.perf_counter() - t0
                tokens += sum(s.tokens for s in done)
            add(t.name, "rate", tokens / wall)
            if t.pids:
                add(t.name, "cpu_ms_per_1k", (cpu_ns(t.pids) - before) / tokens / 1e3)
            add(t.name, "ollama_cpu_ms_per_1k", (cpu_ns([args.ollama_pid]) - ollama_before) / tokens / 1e3)
            add(t.name, "client_cpu_ms_per_1k", (cpu_ns([os.getpid()]) - client_before) / tokens / 1e3)
    figures: dict[str, dict[str, float]] = {}
    for name, samples in out.items():
        f = {k: statistics.median(v) for k, v in samples.items() if k != "ttft"}
        f["ttft_p50"] = statistics.median(samples["ttft"])
        f["ttft_p99"] = pct(samples["ttft"], 0.99)
        figures[name] = f
    return figures


def table(figures: dict[str, dict[str, float]], absent: dict[str, str], args: argparse.Namespace) -> list[str]:
    base = figures["direct Ollama"]
    rows = [
        f"| path | first token p50 (added) | p99 | burst of {args.streams}: p50 (added) | p99 "
        f"| tokens/s at {args.streams} streams (ratio) | CPU ms / 1,000 tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in figures.items():
        added = "" if name == "direct Ollama" else f" ({(f['ttft_p50'] - base['ttft_p50']) * 1e3:+.2f})"
        burst_added = "" if name == "direct Ollama" else f" ({(f['burst_p50'] - base['burst_p50']) * 1e3:+.1f})"
        cpu = f"{f['cpu_ms_per_1k']:.1f}" if "cpu_ms_per_1k" in f else "-"
        rows.append(
            f"| {name} | {f['ttft_p50'] * 1e3:.2f} ms{added} | {f['ttft_p99'] * 1e3:.2f} ms "
            f"| {f['burst_p50'] * 1e3:.1f} ms{burst_added} | {f['burst_p99'] * 1e3:.1f} ms "
            f"| {f['rate']:,.0f} ({f['rate'] / base['rate']:.2f}) | {cpu} |"
        )
    rows += [f"| {name} | {why} | | | | | |" for name, why in absent.items()]
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, Python {sys.version.split()[0]}"


def write_markdown(path: Path, rows: list[str], args: argparse.Namespace) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = "\n".join(
        [
            START,
            f"Measured {when} on {machine()}; `python -m tests.bench.relay_bench --ttft-requests "
            f"{args.ttft_requests} --streams {args.streams} --tokens {args.tokens} --rounds {args.rounds} "
            f"--rate-runs {args.rate_runs}{' --pin' if args.pin else ''}`.",
            "",
            *rows,
            END,
        ]
    )
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


async def bench(
    args: argparse.Namespace, double_url: str, studios: dict[str, tuple[str, int]], litellm: str | None
) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        double = Double(double_url, session)
        await double.configure(0, SHORT_REPLY)
        direct = DIALECTS["direct Ollama"]
        targets = [Target("direct Ollama", lambda: read(session, double_url, direct, {}), [])]
        absent: dict[str, str] = {}
        for prefix, (url, pid) in studios.items():
            cookie, key = await buyer(url)
            for name, dialect in DIALECTS.items():
                if name == "direct Ollama":
                    continue
                headers = cookie if name == "/api/chat" else key
                label = prefix + name
                if not await served(session, url, dialect, headers):
                    absent[label] = "not served"
                    continue
                targets.append(
                    Target(label, (lambda u, d, h: lambda: read(session, u, d, h))(url, dialect, headers), [pid])
                )
        if litellm:
            await wait_until_up(session, litellm)
            chat = DIALECTS["/v1/chat/completions"]
            bearer = {"Authorization": f"Bearer {LITELLM_KEY}"}
            targets.append(Target(LITELLM, lambda: read(session, litellm, chat, bearer), []))
        else:
            absent[LITELLM] = "not installed"
        figures = await measure(double, targets, args)

    print(f"\n{machine()}")
    print(
        f"first token over {args.ttft_requests} sequential requests per round; a burst of {args.streams} at once; "
        f"{args.streams} streams of {args.tokens} tokens flat out ({args.rate_runs} runs in a row); "
        f"medians of {args.rounds} rounds" + ("; the Ollama stand-in alone on CPU 0 (--pin)" if args.pin else "")
    )
    rows = table(figures, absent, args)
    print("\n".join(rows))
    print(
        f"CPU ms per 1,000 tokens at {args.streams} streams in the other processes: "
        + "; ".join(
            f"{name}: Ollama stand-in {f['ollama_cpu_ms_per_1k']:.1f}, client {f['client_cpu_ms_per_1k']:.1f}"
            for name, f in figures.items()
        )
    )
    base = figures["direct Ollama"]
    for name, f in figures.items():
        if name in ("direct Ollama", LITELLM):
            continue
        added, burst_added = (f["ttft_p50"] - base["ttft_p50"]) * 1e3, (f["burst_p50"] - base["burst_p50"]) * 1e3
        ratio = f["rate"] / base["rate"]
        print(
            f"{name}: added {added:+.2f} ms (goal <= 1.0) {'ok' if added <= 1.0 else 'MISSED'}; "
            f"burst {burst_added:+.1f} ms (goal <= 10) {'ok' if burst_added <= 10 else 'MISSED'}; "
            f"{ratio:.2f} of direct tokens/s "
            f"(goal >= 0.80) {'ok' if ratio >= 0.8 else 'MISSED'}"
        )
    if args.markdown:
        write_markdown(Path(args.markdown), rows, args)
        print(f"written to {args.markdown}")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` on `cpus` (sched_setaffinity on a pid moves its main thread only)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def profiled(pid: int, out: str) -> Iterator[None]:
    """py-spy sampling `pid` while the block runs (py-spy is not a dependency: `pip install py-spy`)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = "flamegraph" if out.endswith(".svg") else "raw"
    proc = subprocess.Popen([spy, "record", "-p", str(pid), "-o", out, "-f", fmt, "-r", "250", "--nonblocking"])
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ttft-requests", type=int, default=60, help="sequential requests per target and round")
    parser.add_argument("--streams", type=int, default=50, help="requests of a burst, streams at once")
    parser.add_argument("--tokens", type=int, default=300, help="tokens of each stream of the throughput run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate-runs", type=int, default=5, help="runs of --streams streams in a row per target and round (tokens/s)"
    )
    parser.add_argument(
        "--litellm",
        default=str(LITELLM_VENV / "bin/litellm") if (LITELLM_VENV / "bin/litellm").exists() else None,
        help="the `litellm` executable of a venv with litellm[proxy] (default: .venv-litellm's, if there)",
    )
    parser.add_argument("--baseline", default=None, help="a checkout of an older studio, measured in the same run")
    parser.add_argument("--markdown", default=None, help="write the table into this Markdown file")
    parser.add_argument(
        "--profile",
        default=None,
        help="record the studio with py-spy into this file (collapsed stacks; .svg: a flame graph)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the Ollama stand-in alone on CPU 0, the studio, NATS and this client on the others",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.ttft_requests, args.streams, args.tokens, args.rounds, args.litellm = 2, 3, 20, 1, None
        args.rate_runs = 1

    install_event_loop_policy()
    if args.pin:  # what this process starts inherits it; the stand-in is moved to CPU 0 once it runs
        if len(os.sched_getaffinity(0)) < 2 or 0 not in os.sched_getaffinity(0):
            parser.error("--pin needs CPU 0 and at least one other CPU")
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {0})
    baseline = Path(args.baseline) if args.baseline else None
    if baseline is not None:  # the older studio, served by this branch's chat_serve
        shutil.copy(ROOT / "tests/bench/chat_serve.py", baseline / "tests/bench/chat_serve.py")
    natses = [NatsServer(Path(tempfile.mkdtemp()) / "nats", port=free_port()) for _ in range(1 + bool(baseline))]
    try:
        for nats in natses:  # one each: two studios on one bus would share their consumers and queries
            asyncio.run(nats.start())
        dport, sport, bport = free_port(), free_port(), free_port()
        double_url = f"http://127.0.0.1:{dport}"
        serve = ("-m", "tests.bench.chat_serve")
        with contextlib.ExitStack() as stack:
            ollama = stack.enter_context(process(*serve, "ollama", str(dport), ready="ready"))
            args.ollama_pid = ollama.pid
            if args.pin:
                pin(ollama.pid, {0})
            studio = stack.enter_context(process(*serve, "store", str(sport), natses[0].url, double_url, ready="ready"))
            studios = {"": (f"http://127.0.0.1:{sport}", studio.pid)}
            if args.profile:
                stack.enter_context(profiled(studio.pid, args.profile))
            if baseline is not None:
                old = stack.enter_context(
                    process(*serve, "store", str(bport), natses[1].url, double_url, ready="ready", cwd=baseline)
                )
                studios["before: "] = (f"http://127.0.0.1:{bport}", old.pid)
            litellm = (
                stack.enter_context(litellm_proxy(args.litellm, free_port(), double_url, PAID_MODEL))
                if args.litellm
                else None
            )
            asyncio.run(bench(args, double_url, studios, litellm))
    finally:
        for nats in natses:
            nats.stop()


if __name__ == "__main__":
    main()
