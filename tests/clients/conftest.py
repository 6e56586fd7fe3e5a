"""Real client programs against a real studio (the `clients` tier): the accounts studio of
tests/functions/accounts (accounts, purchase, install, webhook, chat behind the embedded gateway) with the
Ollama stand-in, a signed-up account with a personal API key and a bought model.

The npm programs (Codex CLI, ...) are installed by tests/run into tests/.npm (git-ignored, pinned)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from tests.doubles.ollama import OllamaDouble
from tests.functions.accounts.conftest import FREE, OTHER_PAID, PAID, make_studio  # noqa: F401  (fixtures)
from tests.functions.accounts.test_openai_client import signed_up_with_key
from tests.support import eventually

NPM_BIN = Path(__file__).resolve().parent.parent / ".npm" / "node_modules" / ".bin"
THINKER = "deepseek-r1:7b"


async def run_cli(
    program: str, *args: str, env: dict[str, str], cwd: Path, timeout: float = 90
) -> tuple[int, str, str]:
    """Run one of the npm client programs (tests/.npm) to its end, offline, with nothing on stdin: its exit
    code, stdout and stderr. A program still running after `timeout` is killed and fails the test with what
    it printed."""
    path = NPM_BIN / program
    assert path.exists(), f"{program} is not installed: tests/run installs it (tests/.npm)"
    process = await asyncio.create_subprocess_exec(
        str(path),
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        printed = (out + err).decode(errors="replace")
        pytest.fail(f"{program} did not finish within {timeout:g} s; it printed: {printed}")
    return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


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
