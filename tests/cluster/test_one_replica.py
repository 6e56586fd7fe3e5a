"""Live events acted on once across servers: listeners sharing a queue name split the events (one of
them sees each), while plain listeners on every server see them all."""

from __future__ import annotations

from events.bus import Bus
from events.envelope import Event
from events.server import NatsServer
from tests.support import Recorder, SampleTicked, eventually


def tick(n: int) -> Event:
    data = SampleTicked(n=n)
    return Event(type=data.TYPE, source="/tests", data=data.to_data(), subject=data.subject)


async def test_one_replica_listeners_split_live_events_and_broadcast_ones_see_all(nats_server: NatsServer) -> None:
    servers = [Bus(nats_server.url, name=f"server-{i}", source="/tests") for i in range(2)]
    shared, everyone = [Recorder(), Recorder()], [Recorder(), Recorder()]
    try:
        for bus, one, all_ in zip(servers, shared, everyone, strict=True):
            await bus.connect()
            await bus.listen(SampleTicked.TYPE, one, queue="monitor__alert_shortage")
            await bus.listen(SampleTicked.TYPE, all_)
            await bus.flush()  # the server has both subscriptions before anything is published
        for n in range(40):
            await servers[0].publish(tick(n))

        await eventually(lambda: all(len(r) == 40 for r in everyone), message="every server seeing every event")
        await eventually(lambda: sum(len(r) for r in shared) == 40, message="the shared listeners, once each")
        assert sorted(e.data["n"] for r in shared for e in r.items) == list(range(40))
    finally:
        for bus in servers:
            await bus.close(1)
