"""monitor's HTTP contract as types: the query parameters and answers its operator routes document."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct


class EventsQuery(Struct):
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    type: Annotated[str, Meta(description="a type prefix")] = ""


class TailQuery(Struct):
    type: Annotated[str, Meta(description="a type prefix")] = ""
    correlation_id: str = ""


class TimelineQuery(Struct):
    purchase_id: str = ""
    correlation_id: str = ""


class Events(Struct):
    events: list[dict[str, Any]]


class Stats(Struct):
    events: Any
    chat: Any = None


class Redriven(Struct):
    redriven: list[str]
