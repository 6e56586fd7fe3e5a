"""What decoding and checking a request body costs: /api/chat's, by its type (studio/runtime/bodies.py).

    .venv/bin/python -m tests.bench.body_bench [--number 20000] [--concurrent 30] [--image-mb 10]

For three /api/chat bodies (one question; a 10-turn conversation with options; the same with 200
turns), best of 5 rounds, microseconds per body:

- `json.loads`: the standard library's parse alone, the first step of the hand-written checks this
  replaced (the baseline: the old path cost this plus its checks);
- `msgspec untyped`: msgspec's parse into dicts, for scale;
- `typed decode`: `msgspec.json.decode(raw, type=ChatRequest)`, the body checked as it is parsed;
- `decode + conversation`: that, then what depends on the settings (`conversation.parse`): the
  whole cost of a chat body before the model is asked;
- `bad body -> 400`: a body whose 10th message has a wrong role, decoded until refused, with its
  message built (`bodies.refusal`).

Ratios are against `json.loads` in this same run.

Then bodies in flight (issue 21): a whole studio (`localai-studio up`, its own process) is sent `--concurrent`
(30) /api/chat requests at once, each carrying four 10 MB images (a 56 MB body, the largest an image
route takes), while /healthz is asked every 50 ms. Twice, in this same run: with no budget for the bodies
held at once (STUDIO_BODY_BYTES_IN_FLIGHT at 1 TB: every body is read, as before the budget) and with the
default (256 MiB). Figures: the studio's resident memory before and at its peak (VmHWM), /healthz's median
and slowest answer during the burst, and what the requests were answered (403: decoded, images checked,
the model not owned; 503: refused before the body was read, Retry-After).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import multiprocessing
import statistics
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from functions.chat.conversation import ChatRequest, parse
from studio.runtime import bodies
from studio.runtime.errors import BadRequest
from studio.runtime.settings import Settings
from tests.bench.studio_process import Studio, first_visit, ollama_double, visitor

SETTINGS = Settings.from_env({}, chat_max_messages=256)


def conversation(turns: int) -> dict[str, object]:
    roles = ["user", "assistant"] * (turns // 2)
    return {
        "model": "tinyllama:latest",
        "messages": [{"role": r, "content": "Some words of one turn of the conversation. " * 6} for r in roles],
        "options": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 200, "stop": ["\n\n"]},
        "stream": True,
    }


BODIES: dict[str, dict[str, object]] = {
    "one question": {"model": "tinyllama:latest", "message": "Tell me a story."},
    "10 turns + options": conversation(10),
    "200 turns + options": conversation(200),
}


def refused(raw: bytes) -> None:
    try:
        bodies.decode(raw, ChatRequest)
    except BadRequest:
        return
    raise AssertionError("the bad body was accepted")


def best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
UNBOUNDED = str(10**12)  # no budget: every body is read, as before STUDIO_BODY_BYTES_IN_FLIGHT


def image_chat(image_bytes: int, images: int = 4) -> bytes:
    """An /api/chat body carrying `images` PNGs of `image_bytes` each (base64), for a paid vision model."""
    picture = base64.b64encode(PNG + bytes(image_bytes - len(PNG))).decode()
    message = {"role": "user", "content": "What is in these?", "images": [picture] * images}
    return json.dumps({"model": "llava:7b", "messages": [message]}).encode()


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak since the process started), in KB, from /proc."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def probe_healthz(url: str, stop: Any, out: Any) -> None:
    """In a process of its own (the senders' loop is busy copying their bodies, and would be timed too):
    GET /healthz every 50 ms until `stop` is set; each answer's time in ms goes to `out`."""
    parts = urlsplit(url)
    latencies: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        conn.close()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    out.send(latencies)


async def burst(url: str, body: bytes, concurrent: int) -> tuple[Counter[int], list[float]]:
    """`concurrent` visitors send `body` to /api/chat at once while /healthz is asked every 50 ms (from
    another process): the statuses they got, and each /healthz answer's time in ms."""
    sessions = [visitor() for _ in range(concurrent)]
    for session in sessions:
        await first_visit(session, url)
    statuses: Counter[int] = Counter()

    async def send(session: aiohttp.ClientSession) -> None:
        headers = {"Content-Type": "application/json"}
        async with session.post(f"{url}/api/chat", data=body, headers=headers) as resp:
            await resp.read()
            statuses[resp.status] += 1

    stop = multiprocessing.Event()
    receive, send_back = multiprocessing.Pipe(duplex=False)
    prober = multiprocessing.Process(target=probe_healthz, args=(url, stop, send_back))
    prober.start()
    try:
        await asyncio.gather(*(send(s) for s in sessions))
    finally:
        stop.set()
        latencies: list[float] = receive.recv()
        prober.join()
        for session in sessions:
            await session.close()
    return statuses, latencies


async def bodies_in_flight(body: bytes, concurrent: int, budget: str) -> dict[str, object]:
    """One studio process, one burst: its memory and /healthz's answer times, with this budget."""
    with tempfile.TemporaryDirectory() as data, ollama_double() as ollama_url:
        # Every visitor here is 127.0.0.1: its chat streams are not capped at the address's 20.
        extra = {"STUDIO_BODY_BYTES_IN_FLIGHT": budget, "STUDIO_STREAMS_PER_ADDRESS": "1000"}
        studio = Studio(Path(data), ollama_url, extra=extra)
        studio.start()
        try:
            assert studio.proc is not None
            before = memory_kb(studio.proc.pid)
            statuses, latencies = await burst(studio.url, body, concurrent)
            after = memory_kb(studio.proc.pid)
        finally:
            studio.stop()
    return {
        "rss_mb": before["VmRSS"] / 1024,
        "peak_mb": after["VmHWM"] / 1024,
        "healthz_p50_ms": statistics.median(latencies) if latencies else 0.0,
        "healthz_max_ms": max(latencies, default=0.0),
        "statuses": dict(sorted(statuses.items())),
    }


def print_bodies_in_flight(concurrent: int, image_mb: float) -> None:
    body = image_chat(int(image_mb * 1024 * 1024))
    print(f"\n{concurrent} concurrent /api/chat bodies of {len(body) / 1e6:.1f} MB (four {image_mb:g} MB images):")
    print(f"{'budget':28} {'RSS idle':>9} {'RSS peak':>9} {'growth':>8} {'/healthz p50':>13} {'max':>10}  answers")
    runs = {"none (every body read)": UNBOUNDED, "256 MiB (the default)": "268435456"}
    base: dict[str, object] | None = None
    for name, budget in runs.items():
        got = asyncio.run(bodies_in_flight(body, concurrent, budget))
        growth = float(got["peak_mb"]) - float(got["rss_mb"])  # type: ignore[arg-type]
        ratio = ""
        if base is None:
            base = {**got, "growth": growth}
        else:
            ratio = f"  growth {growth / max(float(base['growth']), 1):.2f}x"  # type: ignore[arg-type]
        print(
            f"{name:28} {got['rss_mb']:7.0f}MB {got['peak_mb']:7.0f}MB {growth:6.0f}MB "
            f"{got['healthz_p50_ms']:10.1f}ms {got['healthz_max_ms']:8.1f}ms  {got['statuses']}{ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20_000, help="bodies per round (fewer for the long one)")
    parser.add_argument("--concurrent", type=int, default=30, help="large bodies sent at once")
    parser.add_argument("--image-mb", type=float, default=10, help="each of the four images' size (decoded)")
    parser.add_argument("--smoke", action="store_true", help="tiny parameters: check that the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.number = 20
        args.concurrent, args.image_mb = 3, 0.25
    untyped = msgspec.json.Decoder()
    print(
        f"{'body':22} {'bytes':>7} {'json.loads':>11} {'msgspec untyped':>16} {'typed decode':>13} "
        f"{'decode + conversation':>22} {'bad body -> 400':>16}"
    )
    for name, body in BODIES.items():
        raw = json.dumps(body).encode()
        bad = dict(body)
        if "messages" in bad:
            bad["messages"] = [*body["messages"][:9], {"role": "robot", "content": "x"}]  # type: ignore[index]
        else:
            bad["message"] = 5
        bad_raw = json.dumps(bad).encode()
        n = max(200, args.number * 200 // max(len(raw), 200) // 4) if len(raw) > 5000 else args.number
        base = best_us(lambda raw=raw: json.loads(raw), n)  # type: ignore[misc]
        figures = [
            base,
            best_us(lambda raw=raw: untyped.decode(raw), n),  # type: ignore[misc]
            best_us(lambda raw=raw: bodies.decode(raw, ChatRequest), n),  # type: ignore[misc]
            best_us(lambda raw=raw: parse(bodies.decode(raw, ChatRequest), SETTINGS), n),  # type: ignore[misc]
            best_us(lambda bad_raw=bad_raw: refused(bad_raw), n),  # type: ignore[misc]
        ]
        cells = [f"{f:6.2f}us {f / base:4.2f}x" for f in figures]
        print(f"{name:22} {len(raw):>7} {cells[0]:>11} {cells[1]:>16} {cells[2]:>13} {cells[3]:>22} {cells[4]:>16}")
    print_bodies_in_flight(args.concurrent, args.image_mb)


if __name__ == "__main__":
    main()
