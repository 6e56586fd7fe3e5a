"""Claude Code (`@anthropic-ai/claude-code`, pinned in tests/run) completes a prompt on a bought model
through /v1/messages, offline: autoupdate, telemetry and every other outside call turned off, its home
in the test's folder. It streams with tools and thinking at once (this version does not probe `HEAD /` in
`-p` mode; tests/functions/accounts/test_anthropic_client.py checks that it answers)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.clients.conftest import run_cli
from tests.doubles.ollama import DEFAULT_REPLY, DEFAULT_THINKING, OllamaDouble
from tests.functions.accounts.conftest import FREE
from tests.functions.accounts.test_anthropic_client import AGENT, bought, catalog_with_agent

OFFLINE = {"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1"}


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, AGENT]) as d:
        yield d


async def claude(studio, key: str, home: Path, *args: str, auth: str = "ANTHROPIC_AUTH_TOKEN") -> tuple[int, str]:
    """`claude -p ...` against the studio; its exit code and what it printed."""
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": studio.url("").rstrip("/"),
        auth: key,
        **OFFLINE,
    }
    code, out, err = await run_cli("claude", *args, env=env, cwd=home)
    return code, out + err


@pytest.mark.parametrize("auth", ["ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"])  # Bearer, or x-api-key
async def test_claude_code_answers_with_a_bought_model(make_studio, double, tmp_path, auth, caplog) -> None:
    caplog.set_level(logging.INFO, logger="studio.gateway.access")
    studio = await make_studio(first_user_is_operator=False, catalog_path=catalog_with_agent(tmp_path))
    _, key = await bought(studio, AGENT)

    code, printed = await claude(
        studio, key, tmp_path / "home", "-p", "Say hello", "--model", AGENT, "--tools", "Glob", auth=auth
    )

    assert code == 0, printed
    assert DEFAULT_REPLY in printed
    # The stand-in calls the first tool it is offered; Claude Code answers it, then the model speaks.
    first, second = double.chat_requests
    assert first["model"] == AGENT and first["think"] is True and first["tools"]
    called = first["tools"][0]["function"]["name"]
    assert [m["role"] for m in second["messages"] if m["role"] != "system"][-2:] == ["assistant", "tool"]
    assert next(m for m in second["messages"] if m["role"] == "tool")["tool_name"] == called
    (asked_back,) = [m for m in second["messages"] if m["role"] == "assistant"]
    assert asked_back["thinking"] == DEFAULT_THINKING  # our signed thinking block, kept and sent back
    seen = [(r.method, r.path, r.status) for r in caplog.records if r.name == "studio.gateway.access"]
    assert [s for s in seen if s[1].startswith("/v1/")] == [("POST", "/v1/messages", 200)] * 2, seen
