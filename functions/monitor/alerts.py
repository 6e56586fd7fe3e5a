"""Alerts: failure events the operator must hear about, posted to a Slack-compatible webhook.

`STUDIO_ALERT_WEBHOOK_URL` receives `{"text": "..."}` (Slack incoming webhooks, Mattermost, Rocket.Chat,
Discord's `/slack` endpoint and most chat tools accept it) for:

- `install.failed` with `will_retry: false`: a model someone owns will not be installed until the
  owner retries or the operator looks;
- `event.dead_lettered`: a consumer gave up on an event (poison, or every attempt failed);
- `consumer.fell_behind` / `consumer.caught_up`: a durable consumer's oldest unacknowledged event is
  older than `STUDIO_EVENTS_LAG_ALERT_S`, and the all-clear once it is back under it.

- `resource.exhausted` (disk low or full, out of file handles, live streams at their cap, an Ollama
  node down): once per kind (per node for a node) every `SHORTAGE_REPEAT_S` while it lasts, and
  `resource.recovered` when it is over.

A payment that fails or a checkout left to expire is the visitor's business, not an alert. The same
webhook gets the ops scripts' alerts (compose/backup-and-monitor). Events older than `MAX_AGE_S`
are not alerted (a new consumer replays the stream's history; a long outage is news already).
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from events.catalog import (
    ConsumerCaughtUp,
    ConsumerFellBehind,
    EventDeadLettered,
    InstallFailed,
    ResourceExhausted,
    ResourceRecovered,
)
from events.delivery import Retry

MAX_AGE_S = 3600.0
ALERT_CONSUMER = "monitor__send_alert"  # the durable consumer that posts alerts (handler.py)


def alert_text(
    data: InstallFailed | EventDeadLettered | ConsumerFellBehind | ConsumerCaughtUp, where: str
) -> str | None:
    """The message for a failure event, or None when it is not worth waking anyone."""
    if isinstance(data, ConsumerFellBehind):
        return (
            f":hourglass: [{where}] {data.consumer} is {data.oldest_pending_s:.0f} s behind "
            f"(alert at {data.threshold_s:g} s): {data.pending} event(s) waiting, {data.ack_pending} in hand. "
            f"See: localai-studio events consumers"
        )
    if isinstance(data, ConsumerCaughtUp):
        return (
            f":white_check_mark: [{where}] resolved: {data.consumer} caught up "
            f"(was behind for {data.behind_for_s:.0f} s; now {data.oldest_pending_s:.1f} s)"
        )
    if isinstance(data, InstallFailed):
        if data.will_retry:
            return None
        return (
            f":x: [{where}] Installing {data.model} failed for good after {data.attempt} attempt(s): "
            f"{data.reason}. Its owners cannot use it until it is installed again "
            f"(the owner's retry, or POST /api/models/install). install_id {data.install_id}"
        )
    if data.consumer == ALERT_CONSUMER:
        return None  # an alert that could not be posted: posting another one would fail the same way
    return (
        f":warning: [{where}] {data.consumer} gave up on {data.event_type} {data.event_id} after "
        f"{data.attempts} attempt(s) ({data.reason}): {data.error[:300]}. "
        f"See: localai-studio events tail --since 1h --type 'event.*'"
    )


SHORTAGE_REPEAT_S = 900.0
_SHORTAGE_ADVICE = {
    "disk_low": "free disk space under the data dir before it is full",
    "disk_full": "purchases answer 503 disk_full until disk space is freed (nothing answered 200 is lost)",
    "out_of_files": "new connections are refused: raise the open-files limit (ulimit -n, compose ulimits.nofile)",
    "live_streams_full": "new live streams get 503 (pages keep working): raise the open-files limit or add a server",
    "database_unavailable": "requests that need the database answer 503 (chat keeps answering what it knows) and "
    "events wait: start the database server or fix STUDIO_DATABASE_URL; nothing answered 200 is lost",
    "bus_unavailable": "requests that need NATS answer 503: start nats-server (or the node) or fix STUDIO_NATS_URL",
    "ollama_node_down": "chat goes to the other nodes: start Ollama there (it gets the models it lacks when it is "
    "back), or take it out of STUDIO_OLLAMA_URLS; GET /health (operator) shows every node",
}
PER_INSTANCE = {"ollama_node_down"}  # each node is its own shortage


class ShortageAlerts:
    """Which shortages were alerted and when: one alert per kind every SHORTAGE_REPEAT_S, then its end."""

    def __init__(self, repeat_s: float = SHORTAGE_REPEAT_S) -> None:
        self.repeat_s = repeat_s
        self._alerted: dict[str, float] = {}

    def text(self, data: ResourceExhausted | ResourceRecovered, where: str, now: float) -> str | None:
        key = f"{data.kind} {data.instance}" if data.kind in PER_INSTANCE else data.kind
        if isinstance(data, ResourceRecovered):
            if self._alerted.pop(key, None) is None:
                return None
            return f":white_check_mark: [{where}] Resolved: {data.kind}: {data.message}"
        last = self._alerted.get(key)
        if last is not None and now - last < self.repeat_s:
            return None
        self._alerted[key] = now
        advice = _SHORTAGE_ADVICE.get(data.kind, "see the studio's logs")
        return (
            f":rotating_light: [{where}] {data.kind} on {data.instance or 'a studio process'}: {data.message}. {advice}"
        )


def age_s(event_time: str, now: datetime | None = None) -> float:
    try:
        when = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return ((now or datetime.now(UTC)) - when).total_seconds()


class AlertWebhook:
    """Posts `{"text": ...}` to the configured URL; nothing at all when none is configured."""

    def __init__(self, url: str | None, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0

    async def post(self, text: str) -> None:
        """Deliver one alert; raises `Retry` when the webhook does not take it (redelivered later)."""
        if not self.url:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.url, json={"text": text}) as resp:
                if resp.status >= 300:
                    raise Retry(f"the alert webhook answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Retry(f"the alert webhook is unreachable: {type(exc).__name__}") from None
        self.sent += 1

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
