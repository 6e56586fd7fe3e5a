"""Outages of what a studio process leans on (its database, NATS): noticed, announced, and their end.

A request or a handler that meets an outage reports it (`studio.runtime.errors.report_database_down`,
`report_bus_down`): the shortage is counted, logged once a minute and alerted (`resource.exhausted`
database_unavailable / bus_unavailable). `OutageWatch` notices an idle process's database going too
(a `SELECT 1` every `probe_s`), looks at once when an outage is reported, and ends each outage
(`resource.recovered`, one info line) as soon as the database answers again or NATS is connected;
`database_back()` lets an event handler wait for that instead of spending its attempts on an outage.
"""

from __future__ import annotations

import asyncio
import contextlib

from events.bus import Bus
from studio.runtime.database import Database, DatabaseUnavailable
from studio.runtime.errors import BUS_DOWN, report_database_down
from studio.runtime.shortages import SHORTAGES, Shortages

DATABASE_DOWN = "database_unavailable"


class OutageWatch:
    def __init__(
        self,
        db: Database | None,
        bus: Bus,
        *,
        probe_s: float = 10.0,
        during_s: float = 1.0,
        shortages: Shortages = SHORTAGES,
    ) -> None:
        self.db = db
        self.bus = bus
        self.probe_s = probe_s  # how often a healthy database is asked
        self.during_s = during_s  # how often, during an outage, whether it is over
        self.shortages = shortages
        self._back = asyncio.Event()
        self._wake = asyncio.Event()  # an outage was reported: look now, then every `during_s`

    def _on_shortage(self, kind: str, message: str, count: int | None) -> None:
        if count is not None and kind in (DATABASE_DOWN, BUS_DOWN):
            self._wake.set()

    def _database_down(self) -> bool:
        return DATABASE_DOWN in self.shortages.active()

    async def check(self) -> None:
        """One round: ask the database (and look at NATS); report an outage or its end."""
        if self.db is not None:
            try:
                await self.db.fetch_one("SELECT 1")
            except DatabaseUnavailable as exc:
                report_database_down(exc)
                self._back.clear()
            else:
                self.shortages.recovered(DATABASE_DOWN, f"the database at {self.db.location} answers again")
                self._back.set()
        if BUS_DOWN in self.shortages.active() and self.bus.connected:
            self.shortages.recovered(BUS_DOWN, "NATS is reachable again")

    async def run(self) -> None:
        self.shortages.listeners.append(self._on_shortage)
        try:
            while True:
                with contextlib.suppress(Exception):  # the watch itself must never stop
                    await self.check()
                down = self._database_down() or BUS_DOWN in self.shortages.active()
                self._wake.clear()
                # An outage reported meanwhile (by a request, a handler) is looked at at once: its end is then
                # noticed within `during_s`, not after the rest of a healthy `probe_s`.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.during_s if down else self.probe_s)
        finally:
            with contextlib.suppress(ValueError):
                self.shortages.listeners.remove(self._on_shortage)

    async def database_back(self) -> None:
        """Return once the database answers again (at once when no outage is known)."""
        if not self._database_down():
            return
        self._back.clear()
        while self._database_down():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._back.wait(), self.during_s)
