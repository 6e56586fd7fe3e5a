"""The chat function behind the gateway (embedded and distributed), the Ollama stand-in, visitors."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientResponse

from events.bus import Bus
from events.catalog import PurchaseCompleted, PurchaseRevoked
from events.envelope import Event
from functions import load
from functions.chat.entitlements import owns
from gateway.app import gateway_app
from gateway.session import COOKIE, Sessions
from studio.runtime.server import function_app
from studio.runtime.settings import Secret, Settings
from tests.doubles.ollama import OllamaDouble
from tests.support import Recorder, eventually

FREE = "tinyllama:latest"  # price 0 in the shipped catalog
PAID = "llama3.2:3b"  # 4.99 USD
OPERATOR_TOKEN = "op-secret"
chat = load("chat")


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID]) as d:
        yield d


@pytest.fixture
def chat_settings(settings: Settings, double: OllamaDouble) -> Settings:
    return settings.replace(ollama_url=double.url, admin_token=Secret(OPERATOR_TOKEN), functions=("chat",))


@dataclass
class Studio:
    """A client of the gateway with the chat function behind it, and what it takes to act as a visitor."""

    client: Any
    settings: Settings
    bus: Bus
    mode: str
    events: Recorder = field(default_factory=Recorder)

    def visitor(self, *, admin: bool = False) -> Visitor:
        user_id, cookie = Sessions(self.settings.cookie_key()).issue()
        headers = {"Cookie": f"{COOKIE}={cookie}"}
        if admin:
            headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        return Visitor(self, user_id, headers)

    def chat_events(self, user_id: str) -> list[Event]:
        return [e for e in self.events.items if e.data.get("user_id") == user_id]


@dataclass
class Visitor:
    studio: Studio
    user_id: str
    headers: dict[str, str]

    async def chat(self, **body: Any) -> ClientResponse:
        return await self.post(body)

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> ClientResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.studio.client.post(
            "/api/chat", data=data, headers={**self.headers, "Content-Type": "application/json", **(headers or {})}
        )

    async def buy(self, model: str) -> str:
        """Own `model` the way the purchase function announces it, and wait until chat knows."""
        purchase_id = "p_" + uuid.uuid4().hex[:12]
        await publish(
            self.studio.bus,
            PurchaseCompleted(
                purchase_id=purchase_id,
                user_id=self.user_id,
                model=model,
                kind="test",
                amount_cents=499,
                currency="usd",
            ),
        )
        await eventually(lambda: owns(chat.db, self.user_id, model), message=f"chat to learn {model} is owned")
        return purchase_id

    async def refund(self, purchase_id: str, model: str) -> None:
        await publish(
            self.studio.bus,
            PurchaseRevoked(purchase_id=purchase_id, user_id=self.user_id, model=model, reason="refunded"),
        )
        await eventually(lambda: _not(owns(chat.db, self.user_id, model)), message="chat to learn of the refund")

    def events(self) -> list[Event]:
        return self.studio.chat_events(self.user_id)


async def _not(awaitable) -> bool:
    return not await awaitable


async def publish(bus: Bus, data: Any) -> None:
    await bus.publish(Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject))


async def start_studio(
    mode: str, chat_settings: Settings, bus: Bus, embedded_studio, aiohttp_client, aiohttp_server
) -> Studio:
    if mode == "embedded":
        client = await embedded_studio([chat], settings_override=chat_settings)
    else:
        server = await aiohttp_server(function_app(chat, chat_settings))
        gw = chat_settings.replace(upstreams={"chat": str(server.make_url("")).rstrip("/")})
        client = await aiohttp_client(gateway_app(gw))
    studio = Studio(client, chat_settings, bus, mode)
    await bus.listen("chat.*", lambda event: studio.events(event))
    return studio


MODES = ["embedded", "distributed"]


@pytest.fixture
def make_studio(chat_settings, bus, aiohttp_server, embedded_studio, aiohttp_client):
    """`await make_studio(mode, **settings)`: the chat function behind the gateway, with these settings.

    (Fixture order matters: clients close before the function's server, so open streams end at once.)
    """

    async def make(mode: str = "embedded", **overrides: Any) -> Studio:
        return await start_studio(
            mode, chat_settings.replace(**overrides), bus, embedded_studio, aiohttp_client, aiohttp_server
        )

    return make


@pytest.fixture(params=MODES)
async def studio(request, make_studio) -> Studio:
    """The chat function behind the gateway, in-process (embedded) and over HTTP (distributed)."""
    return await make_studio(request.param)


@pytest.fixture
async def embedded(make_studio) -> Studio:
    """Embedded only: for behaviour that does not depend on the hop."""
    return await make_studio("embedded")


async def read_events(resp: ClientResponse, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events as (event, data) pairs, until the stream ends or `limit` were read."""
    out: list[tuple[str, dict[str, Any]]] = []
    while limit is None or len(out) < limit:
        raw = await resp.content.readuntil(b"\n\n")
        if not raw.endswith(b"\n\n"):  # the stream ended
            break
        name, data = "message", ""
        for line in raw.decode().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        out.append((name, json.loads(data)))
    return out
