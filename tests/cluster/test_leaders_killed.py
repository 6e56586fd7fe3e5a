"""Issue 21: a studio on a 3-node NATS cluster keeps answering chats while the JetStream meta leader,
then the event stream's leader, then both at once (no quorum until they are back) are SIGKILLed and
restarted, and every chat it answered has exactly one `chat.completed` in the replicated stream: no
usage event lost, none stored twice (the scenario is tests/cluster/leaders.py; tests/reliability/run.py
runs it at full size with two studios)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.leaders import FREE, leaders_killed_mid_chats
from tests.cluster.nats_cluster import NatsCluster
from tests.cluster.processes import StudioProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_leaders_killed_under_chats_lose_no_usage_event_and_store_none_twice(
    studios: Callable[..., StudioProcess], nats_cluster: NatsCluster, cluster_ollama: Any
) -> None:
    cluster_ollama.preinstall(FREE)
    studio = studios("a")
    await studio.start()
    await nats_cluster.wait_for_replicas(3)

    outcome = await leaders_killed_mid_chats(nats_cluster, [studio.url], roles=("meta", "stream", "both"), settle=10)

    print(outcome.text(1))
    assert outcome.kills[0].roles.startswith("meta leader"), outcome.kills
    assert "stream leader" in outcome.kills[1].roles and " at once" in outcome.kills[2].node, outcome.kills
    assert not outcome.missing, (
        f"{len(outcome.missing)} answered chats without a chat.completed in the stream, e.g. {outcome.missing[:5]}"
    )
    assert not outcome.twice, (
        f"{len(outcome.twice)} answered chats with their chat.completed stored more than once: "
        f"{dict(list(outcome.twice.items())[:5])}"
    )
    assert outcome.during() or outcome.while_down(), "no chat was answered while a leader was down"
