"""The studio with accounts: accounts, purchase, install, webhook and chat behind the embedded gateway,
with the Ollama stand-in (models already installed) and test-mode payments; browsers as cookie jars."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from functions import load
from studio.runtime.settings import Secret, Settings
from tests.doubles.ollama import OllamaDouble

FREE = "tinyllama:latest"
PAID = "llama3.2:3b"
OTHER_PAID = "mistral:7b"
PASSWORD = "correct horse battery"
OPERATOR_TOKEN = "op-token"
NAMES = ("accounts", "purchase", "install", "webhook", "chat", "monitor")


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, OTHER_PAID]) as d:
        yield d


@dataclass
class Studio:
    client: Any  # aiohttp TestClient (its own cookie jar: the first browser)
    settings: Settings

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    def browser(self) -> Browser:
        return Browser(self, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))


@dataclass
class Browser:
    """One browser: its own cookies (visitor and session)."""

    studio: Studio
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        headers.update(kw.pop("headers", {}))
        async with self.session.request(method, self.studio.url(path), data=data, headers=headers, **kw) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw else None), resp.headers

    async def visit(self) -> None:
        status, _, _ = await self.request("GET", "/api/models")
        assert status == 200

    async def signup(self, email: str, password: str = PASSWORD) -> tuple[int, Any]:
        status, body, _ = await self.request("POST", "/api/auth/signup", {"email": email, "password": password})
        return status, body

    async def login(self, email: str, password: str = PASSWORD, **kw: Any) -> tuple[int, Any, Any]:
        return await self.request("POST", "/api/auth/login", {"email": email, "password": password}, **kw)

    async def owned(self) -> set[str]:
        status, body, _ = await self.request("GET", "/api/models")
        assert status == 200
        return {m["id"] for m in body["models"] if m["owned"]}

    async def chat(self, model: str) -> tuple[int, Any]:
        status, body, _ = await self.request("POST", "/api/chat", {"model": model, "message": "Hello"})
        return status, body

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def make_studio(embedded_studio, settings: Settings, double: OllamaDouble):
    browsers: list[Browser] = []

    async def make(**changes: Any) -> Studio:
        s = settings.replace(
            **{
                "ollama_url": double.url,
                "skip_payment": True,
                "admin_token": Secret(OPERATOR_TOKEN),
                "functions": NAMES,
                **changes,
            }
        )
        client = await embedded_studio([load(n) for n in NAMES], settings_override=s)
        studio = Studio(client, s)
        original = studio.browser

        def browser() -> Browser:
            b = original()
            browsers.append(b)
            return b

        studio.browser = browser  # type: ignore[method-assign]
        return studio

    yield make
    for b in browsers:
        await b.close()


@pytest.fixture
async def studio(make_studio) -> Studio:
    return await make_studio()
