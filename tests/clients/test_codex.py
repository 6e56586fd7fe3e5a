"""The Codex CLI (`@openai/codex`, from npm) completing a prompt on a bought model, non-interactive
(`codex exec`), against the studio with the Ollama stand-in: Codex speaks only the Responses API
(`wire_api = "responses"`), streamed, with its own tools and instructions."""

from __future__ import annotations

import os
from pathlib import Path

from tests.clients.conftest import run_cli
from tests.doubles.ollama import DEFAULT_REPLY

CONFIG = """\
model = "{model}"
model_provider = "studio"
approval_policy = "never"
sandbox_mode = "read-only"

[model_providers.studio]
name = "Local AI Studio"
base_url = "{base_url}"
env_key = "STUDIO_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""


async def codex(home: Path, workdir: Path, key: str, prompt: str) -> tuple[int, str, str]:
    env = {
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STUDIO_KEY": key,
        "NO_COLOR": "1",
    }
    return await run_cli("codex", "exec", "--skip-git-repo-check", prompt, env=env, cwd=workdir)


async def test_codex_exec_answers_on_a_bought_model(bought, double, tmp_path: Path) -> None:
    studio, key, model = bought
    home, workdir = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    workdir.mkdir()
    (home / ".codex" / "config.toml").write_text(CONFIG.format(model=model, base_url=studio.url("/v1")))

    status, out, err = await codex(home, workdir, key, "Say hello")

    assert status == 0, (out, err)
    assert DEFAULT_REPLY in out, (out, err)
    first, last = double.chat_requests[0], double.chat_requests[-1]
    assert all(r["model"] == model for r in double.chat_requests)
    assert first["messages"][0]["role"] == "system" and len(first["messages"][0]["content"]) > 1000
    assert first["messages"][-1] == {"role": "user", "content": "Say hello"}
    tools = {t["function"]["name"] for t in first["tools"]}  # its function tools only: web_search left out
    assert "exec_command" in tools and "web_search" not in tools
    # the stand-in called Codex's first tool; Codex ran it (or refused its arguments) and sent the result back
    assert last["messages"][-1]["role"] == "tool" and last["messages"][-2]["tool_calls"]
