"""What chat adds to a token stream, and how many streams one studio holds.

    .venv/bin/python -m tests.bench.chat_bench [--loads 250 500 1000 1000@3] [--rounds 3]

Everything runs in its own process on loopback: nats-server, the Ollama stand-in (`tests.doubles.ollama`,
speaking the real /api/chat NDJSON stream, as fast as it can or at a realistic 30 tokens/s), and the
chat function three ways: embedded (gateway + chat in one process), proxied (gateway -> chat function
over HTTP, as in compose) and the chat function alone. Figures are medians within this one run:

1. Ollama clients under concurrency, straight from the stand-in: the studio's `OllamaClient`
   (aiohttp), plain httpx, and the official `ollama.AsyncClient` (httpx + pydantic).
2. Time to first token and tokens/s: straight from Ollama (NDJSON) vs through gateway + chat (SSE),
   embedded and proxied (and the chat function alone, to show what the gateway's hop adds); added
   time and ratios against straight.
3. Concurrent streams (250, 500, 1,000 at 30 tokens/s; 1,000 at 3 tokens/s; 8 s of tokens each,
   arriving over 5 s, so all of them are open at once for a while): how many complete at full pace,
   time to first token under that load, memory (RSS) and CPU per token of the serving process(es),
   how busy each process was (on a small machine they share the same cores), and connections the
   kernel dropped because an accept queue was full.

Goals (issue #4): under 2 ms added to the first token; the relay never the bottleneck (at least
20,000 tokens/s for one stream); 1,000 concurrent streams held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from events.server import NatsServer
from studio.app.runner import install_event_loop_policy
from studio.clients.ollama import OllamaClient
from tests.bench.common import process
from tests.support import free_port

MODEL = "tinyllama:latest"
V1 = "embedded, /v1 (OpenAI)"
V1_RESPONSES = "embedded, /v1/responses"
MESSAGES = "embedded, /v1/messages"
SENTENCE = " Here is one more sentence of a long answer, streamed token by token."
SHORT_REPLY = "Hello there!"  # 3 tokens: time to first token without a long reply to prepare
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def reply_of(tokens: int) -> str:
    per = len(SENTENCE.split(" ")) + 2  # words with their spaces, plus the comma and the full stop
    return (SENTENCE * (tokens // per + 1)).strip()


def chat_body(stream: bool = True) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}], "stream": stream}


@dataclass
class Stream:
    ttft: float  # seconds from sending the request to the first token
    tokens: int
    seconds: float  # first token to the end
    ended: float = field(default_factory=time.perf_counter)  # made when the stream has just ended

    @property
    def started(self) -> float:
        return self.ended - self.seconds - self.ttft


def peak_concurrency(streams: list[Stream]) -> int:
    """The most streams open at one instant."""
    edges = sorted([(s.started, 1) for s in streams] + [(s.ended, -1) for s in streams])
    peak = open_now = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- the measured readers: each consumes one streamed answer and times it ------------------------------


async def read_ndjson(session: aiohttp.ClientSession, url: str) -> Stream:
    """Straight from Ollama: raw NDJSON lines (one per token, then the final line)."""
    t0 = time.perf_counter()
    first, lines = 0.0, 0
    async with session.post(url + "/api/chat", json=chat_body()) as resp:
        async for chunk in resp.content.iter_any():
            if not first:
                first = time.perf_counter()
            lines += chunk.count(b"\n")
    return Stream(first - t0, lines - 1, time.perf_counter() - first)


async def read_sse(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Stream:
    """Through the studio: server-sent `token` events, then `done`."""
    pattern, tail = b"event: token", b""
    t0 = time.perf_counter()
    first, tokens, done = 0.0, 0, False
    async with session.post(url + "/api/chat", json=chat_body(), headers=headers) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_any():
            if not first:
                first = time.perf_counter()
            window = tail + chunk
            tokens += window.count(pattern)
            done = done or b"event: done" in window
            tail = window[-(len(pattern) - 1) :]
    assert done, "the stream ended without its done event"
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def read_openai(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Stream:
    """Through the OpenAI-compatible API: `chat.completion.chunk` data lines, then `data: [DONE]`."""
    pattern, tail = b'"content":', b""  # compact JSON (LiteLLM) or not (the studio)
    t0 = time.perf_counter()
    first, tokens, done = 0.0, 0, False
    async with session.post(url + "/v1/chat/completions", json=chat_body(), headers=headers) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_any():
            if not first:
                first = time.perf_counter()
            window = tail + chunk
            tokens += window.count(pattern)
            done = done or b"data: [DONE]" in window
            tail = window[-(len(pattern) - 1) :]
    assert done, "the stream ended without data: [DONE]"
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def read_responses(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Stream:
    """Through OpenAI's Responses API: `response.output_text.delta` events, then `response.completed`."""
    pattern, tail = b"event: response.output_text.delta", b""
    body = {"model": MODEL, "input": "Tell me a story.", "stream": True}
    t0 = time.perf_counter()
    first, tokens, done = 0.0, 0, False
    async with session.post(url + "/v1/responses", json=body, headers=headers) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_any():
            if not first:
                first = time.perf_counter()
            window = tail + chunk
            tokens += window.count(pattern)
            done = done or b"event: response.completed" in window
            tail = window[-(len(pattern) - 1) :]
    assert done, "the stream ended without response.completed"
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def read_messages(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Stream:
    """Through Anthropic's Messages API: `content_block_delta` events of text, then `message_stop`."""
    pattern, tail, stop, stop_tail = b'"text_delta"', b"", b"event: message_stop", b""
    body = {**chat_body(), "max_tokens": 1_000_000}  # capped at STUDIO_CHAT_MAX_TOKENS, as any answer is
    t0 = time.perf_counter()
    first, tokens, done = 0.0, 0, False
    async with session.post(url + "/v1/messages", json=body, headers=headers) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_any():
            window = tail + chunk
            if not first and pattern in window:  # message_start comes before the first token
                first = time.perf_counter()
            tokens += window.count(pattern)
            tail = window[-(len(pattern) - 1) :]
            done = done or stop in stop_tail + chunk
            stop_tail = (stop_tail + chunk)[-(len(stop) - 1) :]
    assert done, "the stream ended without message_stop"
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def read_with_ollama_client(client: OllamaClient) -> Stream:
    t0 = time.perf_counter()
    first, tokens = 0.0, 0
    async with client.chat(chat_body()) as lines:
        async for line in lines:
            if not first:
                first = time.perf_counter()
            if line["message"]["content"]:
                tokens += 1
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def read_with_split_lines(session: aiohttp.ClientSession, url: str) -> Stream:
    """aiohttp with each received chunk split into lines at once (what `OllamaClient._ndjson` could do)."""
    t0 = time.perf_counter()
    first, tokens, rest = 0.0, 0, b""
    async with session.post(url + "/api/chat", json=chat_body()) as resp:
        async for chunk in resp.content.iter_any():
            *lines, rest = (rest + chunk).split(b"\n")
            for raw in lines:
                if raw:
                    if not first:
                        first = time.perf_counter()
                    if json.loads(raw)["message"]["content"]:
                        tokens += 1
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def read_with_httpx(client, url: str) -> Stream:
    t0 = time.perf_counter()
    first, tokens = 0.0, 0
    async with client.stream("POST", url + "/api/chat", json=chat_body()) as resp:
        async for line in resp.aiter_lines():
            if line:
                if not first:
                    first = time.perf_counter()
                if json.loads(line)["message"]["content"]:
                    tokens += 1
    return Stream(first - t0, tokens, time.perf_counter() - first)


async def read_with_official(client) -> Stream:
    t0 = time.perf_counter()
    first, tokens = 0.0, 0
    body = chat_body()
    async for part in await client.chat(model=MODEL, messages=body["messages"], stream=True):
        if not first:
            first = time.perf_counter()
        if part.message.content:
            tokens += 1
    return Stream(first - t0, tokens, time.perf_counter() - first)


# -- the Ollama stand-in and the serving processes ----------------------------------------------------


class Double:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session

    async def configure(self, tokens_per_s: float, reply: str) -> None:
        async with self.session.post(
            self.url + "/_double/config", json={"tokens_per_s": tokens_per_s, "reply": reply}
        ) as resp:
            assert resp.status == 200
        async with self.session.post(self.url + "/_double/reset", json={}) as resp:
            assert resp.status == 200


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/statm") as f:
            total += int(f.read().split()[1]) * PAGE
    return total / 2**20


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


async def concurrently(n: int, one: Callable[[], Awaitable[Stream]]) -> list[Stream]:
    return list(await asyncio.gather(*(one() for _ in range(n))))


# -- the measurements ----------------------------------------------------------------------------------


async def compare_clients(double: Double, url: str, rounds: int) -> list[str]:
    import httpx
    import ollama

    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]  # httpcore's import of a missing
    # sniffio would otherwise be retried on every request (~0.2 ms): give httpx its best case
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    aio = OllamaClient(url)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout())
    hx = httpx.AsyncClient(timeout=None, limits=limits)
    official = ollama.AsyncClient(host=url, timeout=None, limits=limits)
    clients: dict[str, Callable[[], Awaitable[Stream]]] = {
        "aiohttp (OllamaClient)": lambda: read_with_ollama_client(aio),
        "aiohttp, split per chunk": lambda: read_with_split_lines(session, url),
        "httpx": lambda: read_with_httpx(hx, url),
        "ollama.AsyncClient": lambda: read_with_official(official),
    }
    results: dict[str, dict[str, list[float]]] = {name: {} for name in clients}
    try:
        for _ in range(rounds):
            for name, one in clients.items():
                r = results[name]
                await double.configure(0, reply_of(20_000))
                s = await one()
                r.setdefault("one", []).append(s.tokens / s.seconds)
                await double.configure(0, reply_of(5_000))
                many = await concurrently(10, one)
                r.setdefault("ten_rate", []).append(sum(x.tokens for x in many) / max(x.seconds + x.ttft for x in many))
                r.setdefault("ten_ttft", []).append(statistics.median(x.ttft for x in many))
                r.setdefault("ten_ttft_max", []).append(max(x.ttft for x in many))
                await double.configure(30, reply_of(60))
                hundred = await concurrently(100, one)
                r.setdefault("hundred_p50", []).append(statistics.median(x.ttft for x in hundred))
                r.setdefault("hundred_p99", []).append(pct([x.ttft for x in hundred], 0.99))
    finally:
        await aio.close()
        await session.close()
        await hx.aclose()
        await official.close()
    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
    base = med["aiohttp (OllamaClient)"]
    out = [
        f"1. Ollama clients, straight from the stand-in (medians of {rounds} rounds)",
        f"{'client':<26}{'1 stream':>12}{'ratio':>7}{'10 flat out':>13}{'ttft p50':>10}{'ttft max':>10}"
        f"{'100 @30/s ttft p50':>20}{'p99':>9}",
        f"{'':<26}{'tok/s':>12}{'':>7}{'tok/s total':>13}{'':>10}{'':>10}{'':>20}{'':>9}",
    ]
    for name, m in med.items():
        out.append(
            f"{name:<26}{m['one']:>12,.0f}{m['one'] / base['one']:>7.2f}{m['ten_rate']:>13,.0f}"
            f"{m['ten_ttft'] * 1000:>8.1f}ms{m['ten_ttft_max'] * 1000:>8.1f}ms"
            f"{m['hundred_p50'] * 1000:>18.1f}ms{m['hundred_p99'] * 1000:>7.1f}ms"
        )
    return out


async def time_to_first_token(
    double: Double, targets: dict[str, Callable[[], Awaitable[Stream]]], n: int
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {name: {} for name in targets}
    for rate, label in ((30, "30"), (0, "max")):
        await double.configure(rate, SHORT_REPLY)
        samples: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(n):  # interleaved, so drift hits every target alike
            for name, one in targets.items():
                samples[name].append((await one()).ttft)
        for name, values in samples.items():
            out[name][f"ttft_{label}_p50"] = statistics.median(values)
            out[name][f"ttft_{label}_p99"] = pct(values, 0.99)
    return out


async def one_stream_rate(
    double: Double,
    targets: dict[str, Callable[[], Awaitable[Stream]]],
    pids: dict[str, list[int]],
    rounds: int,
    tokens: int,
) -> dict[str, dict[str, float]]:
    await double.configure(0, reply_of(tokens))
    rates: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, one in targets.items():
            before = cpu_s(pids[name])
            s = await one()
            rates[name].append(s.tokens / s.seconds)
            cpu[name].append((cpu_s(pids[name]) - before) / s.tokens * 1e6)
    return {name: {"rate": statistics.median(rates[name]), "cpu_us": statistics.median(cpu[name])} for name in targets}


def listen_overflows() -> int:
    """Connections the kernel dropped because a server's accept queue was full (all of loopback)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def cpu_of_everyone(pids: list[int], double_pid: int) -> tuple[float, float, float]:
    """CPU seconds so far: the serving process(es), the Ollama stand-in, this benchmark client."""
    return cpu_s(pids) if pids else 0.0, cpu_s([double_pid]), time.process_time()


async def hold_streams(
    double: Double,
    one: Callable[[], Awaitable[Stream]],
    pids: list[int],
    double_pid: int,
    streams: int,
    rate: float,
    seconds: float,
    ramp_s: float,
) -> dict[str, float]:
    await double.configure(rate, reply_of(int(rate * seconds)))
    idle = rss_mb(pids) if pids else 0.0
    cpu_before = cpu_of_everyone(pids, double_pid)
    overflows = listen_overflows()
    peak = idle

    async def sample() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(0.25)
            peak = max(peak, rss_mb(pids))

    sampler = asyncio.create_task(sample()) if pids else None
    t0 = time.perf_counter()
    done = await asyncio.gather(*(_ramped(i, streams, one, ramp_s) for i in range(streams)), return_exceptions=True)
    wall = time.perf_counter() - t0
    if sampler:
        sampler.cancel()
    cpu = [(after - before) / wall for before, after in zip(cpu_before, cpu_of_everyone(pids, double_pid), strict=True)]
    ok = [s for s in done if isinstance(s, Stream)]
    expected = max((s.tokens for s in ok), default=0)
    at_pace = [s for s in ok if s.tokens == expected and s.tokens / s.seconds >= 0.9 * rate]
    tokens = sum(s.tokens for s in ok)
    return {
        "completed": len(ok),
        "at_pace": len(at_pace),
        "peak": peak_concurrency(ok),
        "ttft_p50": statistics.median(s.ttft for s in ok) if ok else float("nan"),
        "ttft_p99": pct([s.ttft for s in ok], 0.99) if ok else float("nan"),
        "tokens_per_s_total": tokens / wall,
        "peak_mb": peak,
        "per_stream_kb": (peak - idle) * 1024 / streams,
        "cpu_us_per_token": cpu[0] * wall / tokens * 1e6 if pids and tokens else float("nan"),
        "cpu_studio": cpu[0],
        "cpu_double": cpu[1],
        "cpu_client": cpu[2],
        "dropped": listen_overflows() - overflows,
    }


async def _ramped(i: int, n: int, one: Callable[[], Awaitable[Stream]], ramp_s: float) -> Stream:
    await asyncio.sleep(ramp_s * i / n)  # visitors arrive one after the other, not all in one instant
    return await one()


async def visitor_cookie(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """A visitor's cookie, as a first page view gets it (chat answers only callers it knows)."""
    async with session.get(url + "/") as resp:
        return {"Cookie": resp.headers["Set-Cookie"].split(";", 1)[0]}


async def bench(
    args: argparse.Namespace,
    double_url: str,
    double_pid: int,
    urls: dict[str, str],
    function_url: str,
    pids: dict[str, list[int]],
) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        double = Double(double_url, session)
        await double.configure(0, SHORT_REPLY)
        headers = {name: await visitor_cookie(session, url) for name, url in urls.items()}
        targets: dict[str, Callable[[], Awaitable[Stream]]] = {
            "straight from Ollama": lambda: read_ndjson(session, double_url)
        }
        for name, url in urls.items():
            targets[name] = (lambda u, h: lambda: read_sse(session, u, h))(url, headers[name])
        embedded = "embedded gateway + chat"
        targets[V1] = lambda: read_openai(session, urls[embedded], headers[embedded])
        bench_user = {"X-Studio-User": "v_bench"}  # what the gateway would assert
        alone = {
            **targets,
            V1_RESPONSES: lambda: read_responses(session, urls[embedded], headers[embedded]),
            MESSAGES: lambda: read_messages(session, urls[embedded], headers[embedded]),
            "chat function alone": lambda: read_sse(session, function_url, bench_user),
        }
        for one in alone.values():  # warm up connections and code paths
            await one()

        lines = await compare_clients(double, double_url, args.rounds)
        ttft = await time_to_first_token(double, alone, args.ttft_requests)
        one_rate = await one_stream_rate(double, alone, pids, args.rounds, args.tokens)
        held: list[tuple[str, int, float, dict[str, float]]] = []
        for streams, rate in args.loads:
            for name, one in targets.items():
                held.append(
                    (
                        name,
                        streams,
                        rate,
                        await hold_streams(double, one, pids[name], double_pid, streams, rate, args.seconds, args.ramp),
                    )
                )

    base_ttft, base_rate = ttft["straight from Ollama"], one_rate["straight from Ollama"]
    print()
    print("\n".join(lines))
    print(
        f"\n2. One stream: time to first token ({args.ttft_requests} requests each, interleaved) and tokens/s "
        f"({args.tokens:,} tokens flat out, median of {args.rounds})"
    )
    print(
        f"{'target':<26}{'ttft @30/s p50':>15}{'p99':>9}{'added':>9}{'ttft @max p50':>15}{'p99':>9}{'added':>9}"
        f"{'tok/s':>10}{'ratio':>7}{'CPU/token':>11}"
    )
    for name in alone:
        t, r = ttft[name], one_rate[name]
        print(
            f"{name:<26}{t['ttft_30_p50'] * 1e3:>13.2f}ms{t['ttft_30_p99'] * 1e3:>7.2f}ms"
            f"{(t['ttft_30_p50'] - base_ttft['ttft_30_p50']) * 1e3:>+7.2f}ms"
            f"{t['ttft_max_p50'] * 1e3:>13.2f}ms{t['ttft_max_p99'] * 1e3:>7.2f}ms"
            f"{(t['ttft_max_p50'] - base_ttft['ttft_max_p50']) * 1e3:>+7.2f}ms"
            f"{r['rate']:>10,.0f}{r['rate'] / base_rate['rate']:>7.2f}{r['cpu_us']:>9.1f}us"
        )
    added = (ttft[MESSAGES]["ttft_30_p50"] - ttft[V1]["ttft_30_p50"]) * 1e3
    print(
        f"/v1/messages against /v1/chat/completions: time to first token {added:+.2f} ms, tokens/s "
        f"{one_rate[MESSAGES]['rate'] / one_rate[V1]['rate']:.3f} of it (goal: within 0.3 ms and 5 %)"
    )
    print(
        f"\n3. Concurrent streams of {args.seconds:g} s of tokens, arriving evenly over {args.ramp:g} s; "
        "CPU in cores (1.00 = one core busy) of the serving process(es), the Ollama stand-in and this client"
    )
    print(
        f"{'target':<26}{'streams':>8}{'tok/s':>6}{'done':>6}{'at pace':>8}{'at once':>8}{'ttft p50':>10}{'p99':>9}"
        f"{'tok/s total':>12}{'RSS peak':>9}{'/stream':>9}{'CPU/token':>10}{'CPU studio':>11}{'Ollama':>7}"
        f"{'client':>7}{'SYN drops':>10}"
    )
    for name, streams, rate, h in held:
        print(
            f"{name:<26}{streams:>8,}{rate:>6g}{h['completed']:>6,}{h['at_pace']:>8,}{h['peak']:>8,}"
            f"{h['ttft_p50'] * 1e3:>8.1f}ms"
            f"{h['ttft_p99'] * 1e3:>7.0f}ms{h['tokens_per_s_total']:>12,.0f}{h['peak_mb']:>7.0f}MB"
            f"{h['per_stream_kb']:>7.0f}KB{h['cpu_us_per_token']:>8.1f}us{h['cpu_studio']:>11.2f}"
            f"{h['cpu_double']:>7.2f}{h['cpu_client']:>7.2f}{h['dropped']:>10,}"
        )
    print(
        "\n(at pace: every token arrived, at >= 90 % of the stand-in's rate; at once: the most streams open at one "
        "instant. CPU/token and memory are the serving "
        "process(es)': the studio embedded; gateway + chat function proxied; none straight from Ollama. "
        "SYN drops: new connections the kernel dropped (a full accept queue), each costing its client 1 s or more.)"
    )
    print(
        "goals: added time to first token < 2 ms; one stream >= 20,000 tokens/s through the studio; 1,000 streams held"
    )


def load(text: str) -> tuple[int, float]:
    streams, _, rate = text.partition("@")
    return int(streams), float(rate or 30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--loads",
        type=load,
        nargs="+",
        default=[load(x) for x in ("250", "500", "1000", "1000@3")],
        metavar="STREAMS[@TOKENS_PER_S]",
        help="concurrent streams (at 30 tokens/s unless given)",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each of those streams")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which those streams arrive")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the throughput measurements")
    parser.add_argument("--tokens", type=int, default=50_000, help="tokens of the one flat-out stream")
    parser.add_argument("--ttft-requests", type=int, default=100, help="requests per target for time to first token")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.loads, args.seconds, args.ramp = [(5, 30.0)], 0.5, 0.2
        args.rounds, args.tokens, args.ttft_requests = 1, 200, 3

    install_event_loop_policy()
    nats = NatsServer(Path(tempfile.mkdtemp()) / "nats", port=free_port())
    asyncio.run(nats.start())
    try:
        dport, fport, eport, pport = free_port(), free_port(), free_port(), free_port()
        double_url = f"http://127.0.0.1:{dport}"
        serve = ("-m", "tests.bench.chat_serve")
        with (
            process(*serve, "ollama", str(dport), ready="ready") as double_proc,
            process(*serve, "function", str(fport), nats.url, double_url, ready="ready") as function_proc,
            process(
                *serve, "proxied", str(pport), nats.url, double_url, f"http://127.0.0.1:{fport}", ready="ready"
            ) as gateway_proc,
            process(*serve, "embedded", str(eport), nats.url, double_url, ready="ready") as embedded_proc,
        ):
            urls = {
                "embedded gateway + chat": f"http://127.0.0.1:{eport}",
                "proxied gateway -> chat": f"http://127.0.0.1:{pport}",
            }
            pids = {
                "straight from Ollama": [],
                "embedded gateway + chat": [embedded_proc.pid],
                V1: [embedded_proc.pid],
                V1_RESPONSES: [embedded_proc.pid],
                MESSAGES: [embedded_proc.pid],
                "proxied gateway -> chat": [gateway_proc.pid, function_proc.pid],
                "chat function alone": [function_proc.pid],
            }
            print(f"Ollama stand-in pid {double_proc.pid}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
            asyncio.run(bench(args, double_url, double_proc.pid, urls, f"http://127.0.0.1:{fport}", pids))
    finally:
        nats.stop()


if __name__ == "__main__":
    main()
