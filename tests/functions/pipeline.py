"""The purchase-to-install pipeline in one process: purchase, install and webhook behind the gateway,
with the Ollama and Stripe stand-ins over real HTTP, and a visitor's session."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from events.bus import Bus
from events.envelope import Event
from functions import load
from studio.runtime.settings import Secret, Settings
from tests.doubles.ollama import OllamaDouble
from tests.doubles.stripe import StripeDouble
from tests.support import Recorder, eventually

PIPELINE = ("purchase", "install", "webhook")
OPERATOR_TOKEN = "op-token"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def pipeline_settings(settings: Settings, ollama: OllamaDouble, stripe_api: StripeDouble, **changes: Any) -> Settings:
    return settings.replace(
        **{
            "ollama_url": ollama.url,
            "stripe_api_base": stripe_api.url,
            "stripe_secret_key": Secret(stripe_api.api_key),
            "stripe_webhook_secret": Secret(stripe_api.webhook_secret),
            "admin_token": Secret(OPERATOR_TOKEN),
            "functions": PIPELINE,
            "public_url": "https://studio.test",
            **changes,
        }
    )


@dataclass
class Studio:
    client: Any  # aiohttp TestClient: the first visitor (keeps its cookie)
    bus: Bus
    ollama: OllamaDouble
    stripe: StripeDouble
    events: Recorder = field(default_factory=Recorder)

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    @contextlib.asynccontextmanager
    async def visitor(self):
        """Another visitor: a fresh cookie jar, and a first page visit for the session cookie."""
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(self.url("/api/models")) as first:
                assert first.status == 200
            yield session

    def of_type(self, event_type: str, model: str | None = None) -> list[Event]:
        return [
            e for e in self.events.items if e.type == event_type and (model is None or e.data.get("model") == model)
        ]

    async def wait_for_event(
        self, event_type: str, model: str | None = None, count: int = 1, timeout: float = 15
    ) -> list[Event]:
        await eventually(
            lambda: len(self.of_type(event_type, model)) >= count,
            timeout=timeout,
            message=f"{count} x {event_type} {model or ''}",
        )
        return self.of_type(event_type, model)

    async def model(self, model_id: str, visitor: Any = None) -> dict[str, Any]:
        resp = await (visitor.get(self.url("/api/models")) if visitor else self.client.get("/api/models"))
        assert resp.status == 200
        return next(m for m in (await resp.json())["models"] if m["id"] == model_id)

    async def db_counts(self) -> dict[str, int]:
        purchase = load("purchase")
        counts = {}
        for table in ("purchases", "outbox", "stripe_events", "installs"):
            row = await purchase.db.fetch_one(f"SELECT COUNT(*) FROM {table}")
            assert row is not None
            counts[table] = row[0]
        counts["stream"] = (await self.bus.jetstream_info())["messages"]
        return counts

    async def idle(self, *consumers: str) -> bool:
        """Whether these durable consumers have handled everything stored for them."""
        lags = {lag.consumer: lag for lag in await self.bus.consumer_lags()}
        return all(c in lags and lags[c].pending == 0 and lags[c].ack_pending == 0 for c in consumers)


async def start_studio(
    embedded_studio, settings: Settings, ollama: OllamaDouble, stripe_api: StripeDouble, bus: Bus, **changes: Any
) -> Studio:
    s = pipeline_settings(settings, ollama, stripe_api, **changes)
    events = Recorder()  # listening before the studio starts: what it does at start-up is seen too
    for pattern in ("purchase.*", "install.*", "payment.*", "event.*"):
        await bus.listen(pattern, events)
    await bus.flush()
    client = await embedded_studio([load(n) for n in PIPELINE], settings_override=s)
    studio = Studio(client=client, bus=bus, ollama=ollama, stripe=stripe_api, events=events)
    assert (await client.get("/")).status in (200, 404)  # first visit: the visitor cookie
    return studio
