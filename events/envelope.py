"""The event envelope: CloudEvents 1.0 attribute names, JSON on the wire.

Every message the studio puts on NATS is one `Event` serialised as a CloudEvents JSON object
(structured mode), so any CloudEvents tool can read the stream. `correlationid` is a CloudEvents
extension attribute carrying the id of the HTTP request (or earlier event) that caused it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SPECVERSION = "1.0"
SUBJECT_PREFIX = "studio."


class InvalidEvent(ValueError):
    """A message on the bus that is not a well-formed studio event."""


def new_id() -> str:
    return uuid.uuid4().hex


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def nats_subject(event_type: str) -> str:
    """`purchase.completed` -> `studio.purchase.completed`."""
    return SUBJECT_PREFIX + event_type


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    source: str
    data: dict[str, Any]
    subject: str | None = None
    id: str = field(default_factory=new_id)
    time: str = field(default_factory=now_iso)
    correlationid: str | None = None
    specversion: str = SPECVERSION
    datacontenttype: str = "application/json"

    @property
    def nats_subject(self) -> str:
        return nats_subject(self.type)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
            "data": self.data,
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.correlationid is not None:
            out["correlationid"] = self.correlationid
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Event:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidEvent(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidEvent("an event must be a JSON object")
        missing = [k for k in ("specversion", "id", "source", "type") if not isinstance(doc.get(k), str)]
        if missing:
            raise InvalidEvent(f"missing CloudEvents attribute(s): {', '.join(missing)}")
        if doc["specversion"] != SPECVERSION:
            raise InvalidEvent(f"unsupported specversion {doc['specversion']!r}")
        data = doc.get("data", {})
        if not isinstance(data, dict):
            raise InvalidEvent("data must be a JSON object")
        return cls(
            type=doc["type"],
            source=doc["source"],
            data=data,
            subject=doc.get("subject"),
            id=doc["id"],
            time=doc.get("time") or now_iso(),
            correlationid=doc.get("correlationid"),
            datacontenttype=doc.get("datacontenttype", "application/json"),
        )
