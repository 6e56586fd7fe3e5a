"""Helpers for tests: wait on a condition (never a bare sleep), record what handlers saw, SDK clients' HTTP."""

from __future__ import annotations

import asyncio
import inspect
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_TLS = ssl.create_default_context()


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
