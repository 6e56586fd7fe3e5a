"""Every event type of the studio, in one place: its name, whether it is durable, its data.

Event types are facts named `noun.past_tense`. Each is a frozen dataclass holding the event's `data`;
`DURABLE` says where it travels:

- durable (JetStream stream `STUDIO_EVENTS`): stored on disk, replayable, consumed by durable pull
  consumers with acknowledgements. Anything that must not be lost.
- live-only (core NATS): high-rate or ephemeral facts (progress, heartbeats). Whoever listens now
  sees them; nobody can replay them.

Evolve additively: add optional fields with defaults, never rename or remove one. Unknown fields in
incoming data are ignored, so old consumers keep working.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from events.envelope import Event, InvalidEvent

EVENT_TYPES: dict[str, type[EventData]] = {}


class EventData:
    """Base of every event's data. Subclasses are frozen dataclasses that set TYPE and DURABLE."""

    TYPE: ClassVar[str]
    DURABLE: ClassVar[bool]
    SUBJECT_FIELD: ClassVar[str | None] = None  # field used as the CloudEvents `subject`

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            if cls.TYPE in EVENT_TYPES:
                raise TypeError(f"event type {cls.TYPE!r} is declared twice")
            EVENT_TYPES[cls.TYPE] = cls

    def to_data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @property
    def subject(self) -> str | None:
        return None if self.SUBJECT_FIELD is None else str(getattr(self, self.SUBJECT_FIELD))

    @classmethod
    def from_event(cls, event: Event) -> Self:
        if event.type != cls.TYPE:
            raise InvalidEvent(f"expected {cls.TYPE}, got {event.type}")
        return cls.from_data(event.data)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        kwargs: dict[str, Any] = {}
        hints = _hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                value = data[f.name]
                if not _matches(value, hints[f.name]):
                    raise InvalidEvent(f"{cls.TYPE}: field {f.name!r} has the wrong type")
                kwargs[f.name] = value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidEvent(f"{cls.TYPE}: required field {f.name!r} is missing")
        return cls(**kwargs)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _matches(value: Any, hint: Any) -> bool:
    """A shallow type check of decoded JSON against a field's annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        hint = origin
    return isinstance(value, hint)


def data_class_for(event_type: str) -> type[EventData] | None:
    return EVENT_TYPES.get(event_type)


def durable_types() -> list[str]:
    return sorted(t for t, cls in EVENT_TYPES.items() if cls.DURABLE)


# -- the runtime's own events ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HeartbeatEmitted(EventData):
    """A function instance is alive; carries its HTTP metrics snapshot for the monitor."""

    TYPE = "heartbeat.emitted"
    DURABLE = False
    SUBJECT_FIELD = "function"
    function: str
    instance: str
    pid: int
    started_at: str
    uptime_s: float
    inflight: int = 0
    http: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class HeartbeatRequested(EventData):
    """Someone (the health function at start-up) asks every instance to beat now."""

    TYPE = "heartbeat.requested"
    DURABLE = False
    requested_by: str


@dataclass(frozen=True, kw_only=True)
class FunctionStarted(EventData):
    TYPE = "function.started"
    DURABLE = True
    SUBJECT_FIELD = "function"
    function: str
    instance: str
    version: str


@dataclass(frozen=True, kw_only=True)
class FunctionStopped(EventData):
    TYPE = "function.stopped"
    DURABLE = True
    SUBJECT_FIELD = "function"
    function: str
    instance: str
    uptime_s: float


@dataclass(frozen=True, kw_only=True)
class EventDeadLettered(EventData):
    """A consumer gave up on an event: it was rejected as poison or failed on every attempt."""

    TYPE = "event.dead_lettered"
    DURABLE = True
    SUBJECT_FIELD = "event_type"
    event_id: str
    event_type: str
    consumer: str
    attempts: int
    reason: str
    error: str
