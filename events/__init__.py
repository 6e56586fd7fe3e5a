"""events: the envelope, the catalog of event types (and its AsyncAPI document), and the bus (the one place
that knows NATS; `memory://` URLs give the in-process bus of events/memory.py, for tests)."""

from events.bus import STREAM, Bus, BusUnavailable, Consumer, NatsBus, StreamPolicy
from events.catalog import EVENT_TYPES, EventData
from events.correlation import correlation_id
from events.delivery import Backoff, Delivery, Reject, Retry
from events.envelope import Event, InvalidEvent, nats_subject
from events.memory import MemoryBus  # registers memory:// with Bus (tests)

__all__ = [
    "EVENT_TYPES",
    "STREAM",
    "Backoff",
    "Bus",
    "BusUnavailable",
    "Consumer",
    "Delivery",
    "Event",
    "EventData",
    "InvalidEvent",
    "MemoryBus",
    "NatsBus",
    "Reject",
    "Retry",
    "StreamPolicy",
    "correlation_id",
    "nats_subject",
]
