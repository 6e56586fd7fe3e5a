"""How far behind the durable consumers are, watched: metrics, and an alert when one falls behind.

Every few seconds (`STUDIO_HEARTBEAT_S`) the monitor reads each durable consumer's lag from JetStream
(`events.lag`). A consumer whose oldest unacknowledged event is older than `STUDIO_EVENTS_LAG_ALERT_S`
raises `consumer.fell_behind` once; when it is back under the threshold, `consumer.caught_up`. Both
go to the alert webhook (alerts.py). Every monitor replica (one per server in a cluster) watches on
its own, and publishes each under one id per consumer, kind and quarter of an hour (`episode_id`), so
the stream keeps one of them and one replica posts the alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from events.bus import Bus, BusUnavailable
from events.catalog import ConsumerCaughtUp, ConsumerFellBehind, EventData
from events.lag import ConsumerLag, consumer_lags
from functions.monitor.scale import episode_id

log = logging.getLogger("studio.functions.monitor")


class ConsumerWatch:
    def __init__(self, bus: Bus, threshold_s: float, publish: Callable[[EventData, str], Awaitable[object]]) -> None:
        self.bus = bus
        self.threshold_s = threshold_s
        self.publish = publish
        self.lags: list[ConsumerLag] = []
        self.checked_at: float | None = None
        self.behind_since: dict[str, float] = {}  # consumer -> when the alert was raised (monotonic)

    async def check(self) -> None:
        self.lags = await consumer_lags(self.bus)
        self.checked_at = time.monotonic()
        for lag in self.lags:
            await self._judge(lag)

    async def _judge(self, lag: ConsumerLag) -> None:
        since = self.behind_since.get(lag.consumer)
        if since is None and lag.oldest_pending_s > self.threshold_s:
            await self.publish(
                ConsumerFellBehind(
                    consumer=lag.consumer,
                    pending=lag.pending,
                    ack_pending=lag.ack_pending,
                    oldest_pending_s=lag.oldest_pending_s,
                    threshold_s=self.threshold_s,
                ),
                episode_id(ConsumerFellBehind.TYPE, lag.consumer, time.time()),
            )
            self.behind_since[lag.consumer] = time.monotonic()
            log.warning("consumer fell behind", extra=lag.to_dict())
        elif since is not None and lag.oldest_pending_s <= self.threshold_s:
            await self.publish(
                ConsumerCaughtUp(
                    consumer=lag.consumer,
                    behind_for_s=round(time.monotonic() - since, 1),
                    oldest_pending_s=lag.oldest_pending_s,
                    threshold_s=self.threshold_s,
                ),
                episode_id(ConsumerCaughtUp.TYPE, lag.consumer, time.time()),
            )
            del self.behind_since[lag.consumer]
            log.info("consumer caught up", extra=lag.to_dict())

    async def run(self, every_s: float) -> None:
        while True:
            try:
                await self.check()
            except BusUnavailable as exc:
                log.debug("consumer lags unavailable: %s", exc)
            except Exception:
                log.exception("checking consumer lags failed")
            await asyncio.sleep(every_s)
