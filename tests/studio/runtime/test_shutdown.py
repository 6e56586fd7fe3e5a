"""Stopping a studio: nothing new reaches a function, what is in flight finishes (or is cut at the grace
period), and only then does the function's state go: no handler ever meets a function torn down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from events.bus import Bus
from events.envelope import Event
from studio.runtime.function import Function, Key
from studio.runtime.host import Host
from studio.runtime.settings import Settings
from tests.support import SampleRecorded, eventually

STATE = Key[dict[str, bool]]("state")


async def test_a_live_event_in_flight_at_stop_never_meets_the_function_torn_down(
    settings: Settings, bus: Bus, caplog
) -> None:
    fn = Function("ordered", uses_database=True)  # as the monitor and install: the outbox flushes at stop
    torn_down = asyncio.Event()
    arrived: list[int] = []
    met_state: list[bool] = []

    @fn.resource
    async def state(f: Function) -> AsyncIterator[None]:
        f[STATE] = {"open": True}
        yield
        torn_down.set()

    @fn.listen(SampleRecorded)
    async def remember(data: SampleRecorded) -> None:
        arrived.append(data.n)
        await torn_down.wait()  # work that outlives the grace period unless the state goes first
        try:
            met_state.append(fn[STATE]["open"])
        except KeyError:
            met_state.append(False)
            raise

    host = Host([fn], settings.replace(shutdown_grace_s=0.5))
    await host.start()
    data = SampleRecorded(n=1)
    await bus.publish(Event(type=data.TYPE, source="/tests", data=data.to_data(), subject="1"))
    await eventually(lambda: arrived == [1], message="the event to reach the listener")

    await host.stop()

    assert False not in met_state  # finished with its state, or cut at the grace period: never without it
    assert torn_down.is_set()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
