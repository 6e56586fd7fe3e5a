"""Real client programs against a real studio (the `clients` tier): the accounts studio of
tests/functions/accounts (accounts, purchase, install, webhook, chat behind the embedded gateway) with the
Ollama stand-in, a signed-up account with a personal API key and a bought model.

The npm programs (Codex CLI, ...) are installed by tests/run into tests/.npm (git-ignored, pinned)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.doubles.ollama import OllamaDouble
from tests.functions.accounts.conftest import FREE, OTHER_PAID, PAID, make_studio  # noqa: F401  (fixtures)
from tests.functions.accounts.test_openai_client import signed_up_with_key
from tests.support import eventually

NPM_BIN = Path(__file__).resolve().parent.parent / ".npm" / "node_modules" / ".bin"
THINKER = "deepseek-r1:7b"


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, OTHER_PAID, THINKER]) as d:
        yield d


@pytest.fixture
async def bought(make_studio):  # noqa: F811
    """(studio, API key, model): an account whose key may use PAID, bought in test mode. Agents send long
    instructions (Codex's are tens of thousands of characters): the message limit is raised for them."""
    studio = await make_studio(first_user_is_operator=False, chat_max_message_chars=200_000)
    browser, created, client = await signed_up_with_key(studio)
    status, _, _ = await browser.request("POST", f"/api/models/purchase/{PAID}")
    assert status == 200
    await eventually(lambda: _usable(client, PAID), message="the purchase to reach chat")
    await client.close()
    return studio, created["key"], PAID


async def _usable(client: openai.AsyncOpenAI, model: str) -> bool:
    try:
        return bool(await client.models.retrieve(model))
    except openai.PermissionDeniedError:
        return False
