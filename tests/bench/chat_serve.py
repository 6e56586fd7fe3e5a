"""Serve the chat function for the chat benchmark, in its own process:

    python -m tests.bench.chat_serve MODE PORT NATS_URL OLLAMA_URL[,OLLAMA_URL...] [UPSTREAM]

MODE: function (chat alone, as its container), embedded (gateway with chat in-process), proxied
(gateway forwarding to UPSTREAM over HTTP), accounts (embedded, with the accounts function
too), store (embedded, with accounts and purchase too: a buyer signs up, buys a paid model with
payment skipped and chats with it, the whole path). Per-visitor limits and the token cap are lifted so
one benchmark visitor can hold a thousand streams.

    python -m tests.bench.chat_serve ollama PORT

The Ollama stand-in with its control API (`/_double/config` sets the token rate and the reply).
The studio is served exactly as `localai-studio up` / `run` serve it (studio.app.runner.serve).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from functions import load
from gateway.app import gateway_app
from studio.app.runner import install_event_loop_policy, serve, wait_for_signal
from studio.runtime.host import Host
from studio.runtime.logs import configure
from studio.runtime.server import function_app
from studio.runtime.settings import Settings
from tests.doubles import ollama as ollama_double
from tests.doubles.ollama import OllamaDouble, create_app

PAID_MODEL = "llama3.2:1b"  # a paid catalog model the stand-in has: the store mode's buyer buys it
FUNCTIONS = {"accounts": ("accounts", "chat"), "store": ("accounts", "purchase", "chat")}


async def serve_ollama(port: int) -> None:
    """The stand-in, made to stand in for a Go server at a thousand streams: a listen backlog that does
    not drop connections, and paced tokens without its 20 ms disconnect polls (a sleep per token)."""
    ollama_double._POLL = 3600.0
    double = OllamaDouble(
        installed=["tinyllama:latest", PAID_MODEL], control=True, history_limit=2000, host_guard=False
    )
    runner = web.AppRunner(create_app(double), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096, reuse_address=True).start()
    print(f"ready ollama {port}", flush=True)
    await wait_for_signal()
    await runner.cleanup()


async def main(mode: str, port: int, nats_url: str, ollama_url: str, upstream: str | None) -> None:
    settings = Settings.from_env(
        {},
        port=port,
        nats_url=nats_url,
        ollama_url=ollama_url.split(",")[0],
        **({"ollama_urls": tuple(ollama_url.split(","))} if "," in ollama_url else {}),
        data_dir=Path(tempfile.mkdtemp()),
        log_level="WARNING",
        functions=FUNCTIONS.get(mode, ("chat",)),
        skip_payment=True,
        upstreams={"chat": upstream} if upstream else {},
        chat_max_tokens=10_000_000,
        chat_concurrent_per_visitor=1_000_000,
        chat_requests_per_minute=100_000_000,
        streams_per_address=1_000_000,  # the bench is one address holding every stream
        writes_per_address_per_minute=100_000_000,  # ... and sending every request
    )
    configure(settings.log_level, f"bench-chat-{mode}")
    chat = load("chat")
    host = None
    if mode == "function":
        app = function_app(chat, settings)
    elif mode in ("embedded", "accounts", "store"):
        fns = [load(name) for name in FUNCTIONS.get(mode, ("chat",))]
        host = Host(fns, settings)
        await host.start()
        app = gateway_app(settings, functions=fns, bus=host.bus)
    else:
        app = gateway_app(settings)
    runner = await serve(app, settings, f"ready {mode} {port}", edge=mode != "function")
    await wait_for_signal()
    await runner.cleanup()
    if host:
        await host.stop()


if __name__ == "__main__":
    install_event_loop_policy()
    if sys.argv[1] == "ollama":
        asyncio.run(serve_ollama(int(sys.argv[2])))
    else:
        asyncio.run(
            main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
        )
