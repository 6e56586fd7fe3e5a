"""The event catalog's types: data is checked all the way down when it is read (unknown fields still
ignored), events share fields through a base, ids derived from ids in one place, and the AsyncAPI document
generated from the types lists every event type with its data schema."""

from __future__ import annotations

import pytest

from events.asyncapi import document
from events.catalog import (
    EVENT_TYPES,
    ChatCancelled,
    ChatCompleted,
    ChatFailed,
    ChatUsage,
    InstallStarted,
    PurchaseCompleted,
)
from events.envelope import Event, InvalidEvent
from events.ids import install_id_for_purchase, new_install_id, purchase_id_of_install

STARTED = {"install_id": "ins_1", "model": "phi3:mini", "attempt": 1}


def test_a_list_of_strings_is_checked_item_by_item() -> None:
    assert InstallStarted.from_data({**STARTED, "nodes": ["http://a:11434"]}).nodes == ["http://a:11434"]
    with pytest.raises(InvalidEvent, match=r"install\.started: Expected `str`, got `int` - at `\$\.nodes\[1\]`"):
        InstallStarted.from_data({**STARTED, "nodes": ["http://a:11434", 7]})


@pytest.mark.parametrize(
    "data,problem",
    [
        ({**STARTED, "attempt": "1"}, "Expected `int`, got `str`"),
        ({**STARTED, "attempt": True}, "Expected `int`, got `bool`"),
        ({"install_id": "ins_1", "model": "phi3:mini"}, "missing required field `attempt`"),
        ({**STARTED, "model": None}, "Expected `str`, got `null`"),
    ],
)
def test_wrong_or_missing_fields_are_refused_saying_which(data: dict, problem: str) -> None:
    with pytest.raises(InvalidEvent, match=problem):
        InstallStarted.from_data(data)


def test_unknown_fields_are_ignored_and_the_data_round_trips() -> None:
    started = InstallStarted.from_data({**STARTED, "from_a_newer_version": {"x": 1}})
    assert started == InstallStarted(install_id="ins_1", model="phi3:mini", attempt=1)
    assert InstallStarted.from_data(started.to_data()) == started
    event = Event(type=started.TYPE, source="/t", data=started.to_data(), subject=started.subject)
    assert InstallStarted.from_event(Event.from_json(event.to_json())) == started


def test_the_three_chat_events_share_their_usage_fields_through_one_base() -> None:
    shared = {"model", "user_id", "completion_tokens", "duration_ms", "key_id", "thinking_tokens", "node", "fallback"}
    for cls in (ChatCompleted, ChatFailed, ChatCancelled):
        assert issubclass(cls, ChatUsage) and shared <= set(cls.__struct_fields__)
        assert cls.SUBJECT_FIELD == "model"
    assert "chat" not in {t.split(".")[0] for t, cls in EVENT_TYPES.items() if cls is ChatUsage}  # a base, no type


def test_an_install_started_by_a_purchase_carries_the_purchases_id() -> None:
    completed = PurchaseCompleted(
        purchase_id="pur_0123456789abcdef0123", user_id="v", model="m", kind="free", amount_cents=0, currency="usd"
    )
    assert completed.install_id == install_id_for_purchase(completed.purchase_id) == "ins_0123456789abcdef0123"
    assert purchase_id_of_install(completed.install_id) == completed.purchase_id
    fresh = new_install_id()
    assert fresh.startswith("ins_") and len(fresh) == len(completed.install_id) and fresh != new_install_id()


def test_the_asyncapi_document_lists_every_event_type_with_its_data_schema() -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    schemas, messages = doc["components"]["schemas"], doc["components"]["messages"]
    listed = {}
    for key, channel in doc["channels"].items():
        (ref,) = channel["messages"].values()
        message = messages[ref["$ref"].rsplit("/", 1)[1]]
        listed[message["name"]] = message
        assert channel["address"] == "studio." + message["name"]
        assert doc["operations"][f"receive_{key}"]["channel"] == {"$ref": f"#/channels/{key}"}
    assert set(listed) == set(EVENT_TYPES)
    for event_type, cls in EVENT_TYPES.items():
        message = listed[event_type]
        assert message["x-durable"] is cls.DURABLE
        data_ref = message["payload"]["allOf"][1]["properties"]["data"]["$ref"]
        schema = schemas[data_ref.rsplit("/", 1)[1]]
        assert set(schema["properties"]) == set(cls.__struct_fields__), event_type
        required = {f for f in cls.__struct_fields__ if f in schema.get("required", [])}
        assert required == set(schema.get("required", [])), event_type
    nodes = schemas["InstallStarted"]["properties"]["nodes"]
    assert {"type": "array", "items": {"type": "string"}} in nodes["anyOf"]  # as deep as the check
