"""The event catalog as an AsyncAPI 3.0 document, generated from the types in events/catalog.py.

What operators and integrators who tail the stream need, as the HTTP API has its OpenAPI document: every
event type with its NATS subject, whether it is durable (JetStream stream STUDIO_EVENTS, replayable) or
live-only (core NATS), what it means (the type's docstring) and its `data` schema (from the type, by
msgspec: the same types that check the data when it is read). Every message is a CloudEvents 1.0 JSON
envelope (events/envelope.py) whose `data` is that schema. The gateway serves it to the operator at
/api/asyncapi.json, and as a page at /api/docs/events.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import msgspec

from events.bus import QUERY_PREFIX, STREAM
from events.catalog import EVENT_TYPES, EventData
from events.envelope import SPECVERSION, nats_subject

ENVELOPE = "CloudEvent"


def _version() -> str:
    try:
        return metadata.version("localai-studio")
    except metadata.PackageNotFoundError:
        return "0"


def _key(event_type: str) -> str:
    """An AsyncAPI component key (letters, digits, `_`, `-`) for an event type."""
    return event_type.replace(".", "_")


def envelope_schema() -> dict[str, Any]:
    return {
        "title": ENVELOPE,
        "description": "A CloudEvents 1.0 event in structured JSON mode; `correlationid` (an extension) is the id "
        "of the HTTP request or earlier event that caused it.",
        "type": "object",
        "properties": {
            "specversion": {"const": SPECVERSION},
            "id": {"type": "string", "description": "Unique per event; a retried publish keeps it (stored once)"},
            "source": {"type": "string", "description": "Who published it, e.g. /functions/purchase"},
            "type": {"type": "string", "description": "The event type, e.g. purchase.completed"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "subject": {"type": "string", "description": "What the event is about (a purchase id, a model...)"},
            "correlationid": {"type": "string"},
            "data": {"type": "object"},
        },
        "required": ["specversion", "id", "source", "type", "data"],
    }


def _summary(cls: type[EventData]) -> str:
    doc = " ".join((cls.__doc__ or "").split())
    return doc.split(". ")[0].rstrip(".") if doc else cls.TYPE


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: one channel, message and `receive` operation per event type."""
    types = sorted(EVENT_TYPES.values(), key=lambda cls: cls.TYPE)
    _, schemas = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    schemas[ENVELOPE] = envelope_schema()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for cls in types:
        key, name = _key(cls.TYPE), cls.__name__
        travels = (
            f"Durable: stored in the JetStream stream {STREAM}, replayable, consumed by durable consumers."
            if cls.DURABLE
            else "Live-only: core NATS, seen by whoever listens now, never stored."
        )
        messages[name] = {
            "name": cls.TYPE,
            "title": cls.TYPE,
            "summary": _summary(cls),
            "description": " ".join((cls.__doc__ or "").split()) or cls.TYPE,
            "contentType": "application/cloudevents+json",
            "payload": {
                "allOf": [
                    {"$ref": f"#/components/schemas/{ENVELOPE}"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": cls.TYPE},
                            "data": {"$ref": f"#/components/schemas/{name}"},
                            **({"subject": {"description": f"data.{cls.SUBJECT_FIELD}"}} if cls.SUBJECT_FIELD else {}),
                        },
                    },
                ]
            },
            "x-durable": cls.DURABLE,
        }
        channels[key] = {
            "address": nats_subject(cls.TYPE),
            "title": cls.TYPE,
            "description": travels,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"receive_{key}"] = {
            "action": "receive",
            "title": f"Receive {cls.TYPE}",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{name}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Local AI Studio events",
            "version": _version(),
            "description": "Every event the studio's functions publish on NATS. Subscribe to `studio.>` for all of "
            "them (`localai-studio events tail` does); durable ones can be replayed from the stream. Fields are "
            "only ever added, never renamed or removed; readers ignore fields they do not know. Subjects under "
            f"`{QUERY_PREFIX}` are request/reply queries between functions, not events.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "studio": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The studio's NATS (STUDIO_NATS_URL; `up` starts one on STUDIO_NATS_PORT)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
