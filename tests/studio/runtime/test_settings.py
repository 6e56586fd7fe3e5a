"""Settings: one declaration per setting; a bad value is one plain sentence; `config` prints `.env` lines."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from studio.runtime.settings import (
    GROUPS,
    VARS,
    ChatLimits,
    FleetSettings,
    Secret,
    Settings,
    SettingsError,
    Var,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[3]
CLI = str(Path(sys.executable).parent / "localai-studio")
BAD = [pytest.param(var, bad, id=f"{var.env}={bad}") for var in VARS for bad in var.bad]
PYTHON_TEXT = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\b|invalid literal|could not convert|\bNone\b")


def env_lines(text: str) -> dict[str, str]:
    """A `.env` text as Compose reads it: comments and blank lines skipped, one level of quotes removed."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[name] = value
    return out


def test_each_setting_is_one_field_of_settings_and_one_row_of_vars() -> None:
    attrs = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(var.attr for var in VARS) == sorted(attrs)
    assert len({var.env for var in VARS}) == len(VARS) == len(attrs)
    assert all(var.group in GROUPS and var.doc and var.accepts for var in VARS)
    defaults = Settings.from_env({})
    for var in VARS:  # every default is a value its own kind accepts
        assert getattr(defaults, var.attr) == var.read(var.default), var.env


def test_a_group_is_a_typed_view_of_the_same_settings() -> None:
    settings = Settings.from_env({"STUDIO_CHAT_MAX_TOKENS": "512", "STUDIO_OLLAMA_URL": "http://gpu:11434/"})

    def answer_cap(limits: ChatLimits) -> int:  # what a chat module typed to its own group sees
        return limits.chat_max_tokens

    assert answer_cap(settings) == 512
    assert isinstance(settings, FleetSettings) and settings.ollama_nodes == ("http://gpu:11434",)
    chat = {f.name for f in dataclasses.fields(ChatLimits)}
    assert chat == {var.attr for var in VARS if var.attr.startswith("chat_")}
    assert all(issubclass(Settings, group) for group in GROUPS)


def test_the_settings_that_take_any_text_are_the_paths_and_the_secrets() -> None:
    """Every other setting names values it refuses; the bad-value test below tries each of them."""
    assert {var.env for var in VARS if not var.bad} == {
        "STUDIO_DATA_DIR",
        "STUDIO_FRONTEND_DIR",
        "STUDIO_OLLAMA_MODELS_DIR",
        "STUDIO_NATS_CA",
        "STUDIO_NATS_CREDENTIALS_DIR",
        "STUDIO_CATALOG",
        "STUDIO_FALLBACK_API_KEY",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STUDIO_ADMIN_TOKEN",
        "STUDIO_SECRET_KEY",
    }


@pytest.mark.parametrize(("var", "bad"), BAD)
def test_a_bad_value_is_one_sentence_naming_the_variable_and_what_it_accepts(var: Var, bad: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({var.env: bad})
    message = str(caught.value)
    assert message.startswith(f"{var.env}="), message
    assert message.endswith(f"expected {var.accepts}."), message
    assert "\n" not in message and not PYTHON_TEXT.search(message), message
    if var.secret:
        assert message.startswith(f"{var.env}=(hidden: a secret) is not valid"), message


def test_a_secret_given_wrong_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"STUDIO_SMTP_URL": "mail.example.com:p4ssw0rd"})
    assert "p4ssw0rd" not in str(caught.value) and "STUDIO_SMTP_URL=(hidden: a secret)" in str(caught.value)


def test_a_secret_file_that_cannot_be_read_is_one_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "admin_token"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"STUDIO_ADMIN_TOKEN_FILE": str(missing)})
    assert str(caught.value) == (
        f"STUDIO_ADMIN_TOKEN_FILE={missing} cannot be read (no such file or directory): "
        "it names a file holding STUDIO_ADMIN_TOKEN."
    )


CHANGED = {
    "STUDIO_HOST": "0.0.0.0",
    "STUDIO_DATA_DIR": "/srv/studio data",
    "STUDIO_FRONTEND_DIR": "site",
    "STUDIO_NATS_URL": "nats://a:4222,nats://b:4222",
    "STUDIO_EVENTS_REPLICAS": "3",
    "STUDIO_DATABASE_URL": "sqlite:///elsewhere/studio.db",
    "STUDIO_OLLAMA_URLS": "http://a:11434,http://b:11434",
    "STUDIO_HEARTBEAT_S": "0.5",
    "STUDIO_RECONCILE_EVERY_H": "0",
    "STUDIO_FUNCTIONS": "chat,health",
    "STUDIO_UPSTREAMS": "chat=http://chat-1:8000,accounts=http://accounts-1:8000",
    "STUDIO_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8",
    "STUDIO_SKIP_PAYMENT": "yes",
    "STUDIO_SIGNUP": "Closed",
    "STUDIO_LOG_LEVEL": "debug",
    "STUDIO_MAIL_FROM": "Local AI Studio <studio@example.com>",
    "STUDIO_ALERT_WEBHOOK_URL": "https://hooks.example.com/T0/B0/X",
    "STUDIO_OLLAMA_LIBRARY_URL": "",
    "STUDIO_CHAT_MAX_TOKENS": "512",
}


@pytest.mark.parametrize("environ", [{}, CHANGED], ids=["defaults", "changed"])
def test_config_prints_env_lines_that_read_back_to_the_same_settings(environ: dict[str, str]) -> None:
    settings = Settings.from_env(environ)
    text = settings.as_env()
    assert not re.search(r"PosixPath|DatabaseUrl|IPv4Network|Secret\(|None|\(\)|\[|\{'", text), text
    assert Settings.from_env(env_lines(text)) == settings


def test_config_groups_the_lines_and_masks_the_secrets() -> None:
    settings = Settings.from_env(
        {
            "STUDIO_ADMIN_TOKEN": "op-token",
            "STRIPE_SECRET_KEY": "sk_test_123",
            "STUDIO_DATABASE_URL": "postgresql://studio:s3cret@db:5432/studio",
            "STUDIO_MAIL_FROM": "Local AI Studio <studio@example.com>",
        }
    )
    text = settings.as_env()
    lines = text.splitlines()
    assert [ln for ln in lines if ln.startswith("#")] == [f"# {group.title}" for group in GROUPS]
    assert "STUDIO_ADMIN_TOKEN=**********" in lines and "STRIPE_SECRET_KEY=**********" in lines
    assert "STRIPE_WEBHOOK_SECRET=" in lines  # an empty secret shows as empty
    assert "STUDIO_DATABASE_URL=postgresql://studio:***@db:5432/studio" in lines
    assert "op-token" not in text and "sk_test_123" not in text and "s3cret" not in text
    assert "STUDIO_DATA_DIR=./data" in lines and "STUDIO_PUBLIC_URL=" in lines
    assert "STUDIO_MAIL_FROM='Local AI Studio <studio@example.com>'" in lines
    current = None
    for line in lines:  # each variable sits under its own group's heading
        if line.startswith("# "):
            current = next(group for group in GROUPS if line == f"# {group.title}")
        elif line:
            assert next(var for var in VARS if line.startswith(var.env + "=")).group is current, line


def test_the_markdown_reference_has_a_table_per_group_with_every_variable_once() -> None:
    text = markdown_table()
    headings = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert headings == [f"#### {group.title}" for group in GROUPS]
    for var in VARS:
        assert text.count(f"| `{var.env}` |") == 1, var.env
        section = text.split(f"#### {var.group.title}\n", 1)[1].split("\n#", 1)[0]
        assert f"| `{var.env}` |" in section, var.env
    assert markdown_table(2).splitlines()[0] == f"## {GROUPS[0].title}"


def test_env_example_lists_the_settings_meant_for_operators() -> None:
    example = (ROOT / "compose" / ".env.example").read_text()
    listed = re.findall(r"^#?\s*((?:STUDIO|STRIPE)_[A-Z_]+)=", example, flags=re.M)
    assert sorted(set(listed)) == sorted(var.env for var in VARS if var.example)  # (the cluster lines repeat one)
    values = dict(re.findall(r"^((?:STUDIO|STRIPE)_[A-Z_]+)=(.*)$", example, flags=re.M))
    Settings.from_env(values)  # every value the example sets is one the studio accepts
    by_env = {var.env: var for var in VARS}
    for name, value in re.findall(r"^# ((?:STUDIO|STRIPE)_[A-Z_]+)=(.*)$", example, flags=re.M):
        by_env[name].read(value)  # and so is every value it suggests in a commented line


def test_secret_stays_masked_in_repr() -> None:
    settings = Settings.from_env({}, admin_token=Secret("op-token"))
    assert "op-token" not in repr(settings)


def cli(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "STRIPE_"))}
    return subprocess.run([CLI, *args], env=env | environ, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("command", "name", "value"),
    [
        ("up", "STUDIO_LOG_LEVEL", "LOUD"),
        ("up", "STUDIO_PORT", "abc"),
        ("config", "STUDIO_CHAT_MAX_TOKENS", "-1"),
        ("config", "STUDIO_OLLAMA_URL", "localhost:11434"),
        ("config", "STUDIO_SKIP_PAYMENT", "sometimes"),
    ],
)
def test_the_command_refuses_a_bad_value_in_one_line(command: str, name: str, value: str) -> None:
    result = cli(command, **{name: value})
    accepts = next(var.accepts for var in VARS if var.env == name)
    assert result.returncode == 2
    assert result.stdout == ""
    said = rf"localai-studio: {re.escape(name)}={re.escape(value)} is not valid( \([^()\n]+\))?: expected "
    assert re.fullmatch(said + re.escape(accepts) + r"\.\n", result.stderr), result.stderr  # (why, where it can say)


def test_config_command_prints_the_settings_in_effect(tmp_path: Path) -> None:
    result = cli("config", STUDIO_DATA_DIR=str(tmp_path), STUDIO_ADMIN_TOKEN="op-token", STUDIO_PORT="9000")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_PORT": "9000"})
        .replace(admin_token=Secret("op-token"))
        .as_env()
        + "\n"
    )
    assert f"STUDIO_DATA_DIR={tmp_path}\n" in result.stdout and "STUDIO_ADMIN_TOKEN=**********\n" in result.stdout
    markdown = cli("config", "--markdown")
    assert markdown.returncode == 0 and markdown.stdout == markdown_table() + "\n"
