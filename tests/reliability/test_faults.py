"""The reliability table's newer fault scenarios, at a small scale, in the suite: the same code
`tests/reliability/run.py` prints the figures with (real `localai-studio` processes, real NATS and
SQLite or a real PostgreSQL server stopped and started, the Ollama stand-in as a process of its own).
Each scenario's verdict is "ok" only when nothing is lost or done twice and every check it names held;
the text says what was seen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.run import (
    Lab,
    install_killed_mid_pull,
    nats_killed_mid_chats,
    ollama_down,
    postgres_stopped,
    restore_under_writes,
    two_studios_one_outbox,
)

pytestmark = pytest.mark.slow


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with Lab(tmp_path) as lab:
        yield lab


@pytest.mark.timeout(360)  # the restarted install waits out the killed one's lease (30 s) and redelivery
async def test_install_killed_alone_mid_pull_ends_installed_and_never_pulls_a_model_twice_at_once(lab: Lab) -> None:
    verdict, text = await install_killed_mid_pull(lab)
    print(text)
    assert verdict == "ok", text


@pytest.mark.timeout(360)
async def test_ollama_down_chat_503_health_names_it_and_purchases_end_installed(lab: Lab) -> None:
    verdict, text = await ollama_down(lab, seconds=5)
    print(text)
    assert verdict == "ok", text


@pytest.mark.timeout(180)
async def test_backup_under_writes_restores_whole_and_the_studio_starts_on_it(lab: Lab) -> None:
    verdict, text = await restore_under_writes(lab)
    print(text)
    assert verdict == "ok", text


@pytest.mark.timeout(180)
async def test_nats_killed_mid_chats_loses_no_usage_event(lab: Lab) -> None:
    """Issue 21: chat outcomes go through the outbox, so a NATS outage delays them and loses none."""
    verdict, text = await nats_killed_mid_chats(lab)
    print(text)
    assert verdict == "ok", text


@pytest.mark.postgres
@pytest.mark.timeout(300)
async def test_postgres_stopped_under_buyers_and_chats_answers_no_500_loses_nothing_and_recovers(lab: Lab) -> None:
    verdict, text = await postgres_stopped(lab, seconds=5)
    print(text)
    assert verdict == "ok", text


@pytest.mark.postgres
@pytest.mark.timeout(180)
async def test_two_studios_on_one_database_publish_each_outbox_row_once(lab: Lab) -> None:
    verdict, text = await two_studios_one_outbox(lab, seconds=4)
    print(text)
    assert verdict == "ok", text
