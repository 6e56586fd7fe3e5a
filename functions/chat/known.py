"""What chat remembers of who owns which paid model, for when nobody can say (a database outage).

Chat asks the purchase function on every request, and its own projection when purchase does not answer
(`entitlements`); both read the database. While the database is unreachable, a visitor who chatted
with a paid model lately (an entitlement this process saw granted within `KEEP_S`) keeps chatting with
it, as chat keeps answering through a purchase outage; anyone else gets the 503 database_unavailable.
A refusal forgets the pair at once. At most `MOST` pairs are kept (the oldest go first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from events.bus import Bus
from functions.chat.entitlements import Ownership, chattable_model
from studio.catalog import Catalog, CatalogModel
from studio.runtime.database import DatabaseUnavailable
from studio.runtime.errors import Forbidden, report_database_down
from studio.runtime.identity import Identity

KEEP_S = 3600.0
MOST = 50_000


class KnownOwners:
    def __init__(
        self, *, keep_s: float = KEEP_S, most: int = MOST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep_s, self.most, self.clock = keep_s, most, clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def saw(self, user_id: str, model: str) -> None:
        self._seen[(user_id, model)] = self.clock()
        self._seen.move_to_end((user_id, model))
        while len(self._seen) > self.most:
            self._seen.popitem(last=False)

    def forget(self, user_id: str, model: str) -> None:
        self._seen.pop((user_id, model), None)

    def knows(self, user_id: str, model: str) -> bool:
        at = self._seen.get((user_id, model))
        return at is not None and self.clock() - at <= self.keep_s

    async def model_for(
        self, catalog: Catalog, bus: Bus, ownership: Ownership, who: Identity, model_id: str
    ) -> CatalogModel:
        """`chattable_model`, remembered; through a database outage, what was remembered."""
        try:
            model = await chattable_model(catalog, bus, ownership, who, model_id)
        except DatabaseUnavailable as exc:
            known = catalog.get(model_id)
            if known is None or not who.user_id or not self.knows(who.user_id, known.id):
                raise
            report_database_down(exc)
            return known
        except Forbidden:
            if who.user_id:
                self.forget(who.user_id, model_id)
            raise
        if who.user_id and not model.free:
            self.saw(who.user_id, model.id)
        return model
