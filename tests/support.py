"""Helpers for tests: wait on a condition (never a bare sleep), record what handlers saw, SDK clients' HTTP,
ports for the servers tests start."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
import os
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_TLS = ssl.create_default_context()

# Ports for servers a test starts itself (nats-server, a studio, PostgreSQL), picked now and bound a moment
# later by another process. Picked below the kernel's ephemeral range (32768-60999 here), because every
# outgoing connection takes its local port from that range and could take a port picked there before its
# server binds it ("port ... is already in use"); and in a block of its own per xdist worker, so two
# workers never pick the same one. A port still held (a server of an earlier test) is passed over.
PORTS_FROM, PORTS_PER_WORKER, WORKER_BLOCKS = 20_000, 1_000, 12
_next_port = itertools.count()


def free_port() -> int:
    """A port nobody holds now, for a server about to start (see PORTS_FROM)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = PORTS_FROM + (int(worker) if worker.isdigit() else 0) % WORKER_BLOCKS * PORTS_PER_WORKER
    for _ in range(PORTS_PER_WORKER):
        port = first + next(_next_port) % PORTS_PER_WORKER
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port among {first}-{first + PORTS_PER_WORKER - 1}")


class _ImportedWhenUsed:
    """A module's public names, the module imported at the first use of one. Names with an underscore raise
    AttributeError unimported: pytest looks for its own (`__pytest_wrapped__`, `_fixture_function_marker`)
    on every object of a test module while it collects (importlib's LazyLoader would import there)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)


def imported_when_used(name: str) -> Any:
    """The module `name`, imported by the first test that uses it rather than now: the client SDKs cost
    ~1 s of CPU each to import, every xdist worker collects every test module, and only the workers that
    run a test of one use it."""
    return sys.modules.get(name) or _ImportedWhenUsed(name)


def sdk_http(sdk: Any) -> Any:
    """`http_client=` for a client of the `openai` or `anthropic` SDK: the SDK's own default HTTP client, with
    one TLS context for the process instead of one per client, whose CA bundle costs ~30 ms of CPU to load
    (the studio answers plain HTTP here; a few hundred tests make a client)."""
    return sdk.DefaultAsyncHttpxClient(verify=_TLS)


async def eventually(
    check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message} (last: {last!r})")
        await asyncio.sleep(interval)


def wait_sync(
    check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message} (last: {last!r})")
        time.sleep(interval)


async def simulate_work(seconds: float) -> None:
    """Stand-in for a handler's long-running job (not a wait for an event)."""
    await asyncio.sleep(seconds)


class Recorder:
    """Collects what a handler or listener received, with the time it arrived."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.times: list[float] = []

    async def __call__(self, item: Any, *_: Any) -> None:
        self.items.append(item)
        self.times.append(time.monotonic())

    def __len__(self) -> int:
        return len(self.items)


async def gather_with_timeout(*aws: Awaitable[T], timeout: float = 10.0) -> list[T]:
    return await asyncio.wait_for(asyncio.gather(*aws), timeout)


# -- event types that exist only in tests --------------------------------------------------------


from events.catalog import EventData  # noqa: E402


class SampleRecorded(EventData, frozen=True, kw_only=True):
    """A durable event for tests."""

    TYPE = "sample.recorded"
    DURABLE = True
    SUBJECT_FIELD = "n"
    n: int
    note: str = ""


class SampleTicked(EventData, frozen=True, kw_only=True):
    """A live-only event for tests."""

    TYPE = "sample.ticked"
    DURABLE = False
    n: int
