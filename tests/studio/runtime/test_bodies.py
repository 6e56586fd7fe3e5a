"""A request body decoded by its declared type: every way it can be wrong is a 400 with a stable code and a
message naming the field (studio/runtime/bodies.py), over HTTP as in the decoder itself."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec
import pytest

from studio.runtime import bodies
from studio.runtime.errors import BadRequest
from tests.sample.handler import function as sample


class Part(msgspec.Struct, forbid_unknown_fields=True):
    noun: ClassVar[str] = "a part"
    codes: ClassVar[dict[str, str]] = {"colour": "invalid_colour"}
    kind: Literal["bolt", "nut"]
    colour: str = ""


class Order(msgspec.Struct, forbid_unknown_fields=True):
    noun: ClassVar[str] = "an order"
    codes: ClassVar[dict[str, str]] = {"email": "invalid_address"}
    email: Annotated[str, msgspec.Meta(max_length=20, description="where the receipt goes")]
    count: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    parts: list[Part] = []


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        (b"", "invalid_json", "empty"),
        (b"{oops", "invalid_json", "not valid JSON"),
        (b"[1, 2]", "invalid_json", "must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json", ""),
        (b'{"count": 2}', "invalid_address", "email is required: where the receipt goes"),
        (b'{"email": 5}', "invalid_address", "email must be a string, not a whole number"),
        (b'{"email": "' + b"x" * 21 + b'"}', "invalid_address", "email must be a string of length <= 20"),
        (b'{"email": "a@b", "count": 0}', "invalid_count", "count must be a whole number >= 1"),
        (b'{"email": "a@b", "size": 3}', "unknown_field", "unknown field 'size'; an order has email, count, parts"),
        (b'{"email": "a@b", "parts": [{"kind": "gear"}]}', "invalid_parts", "parts[0].kind must be one of bolt, nut"),
        (b'{"email": "a@b", "parts": [{"kind": "nut", "x": 1}]}', "invalid_parts", "parts[0].x is not supported"),
        (b'{"email": "a@b", "parts": [{"kind": "nut", "colour": 1}]}', "invalid_colour", "parts[0].colour"),
        (b'{"email": "a@b", "parts": [{}]}', "invalid_parts", "parts[0].kind is required"),
    ],
)
def test_every_way_a_body_is_wrong_is_a_400_with_its_code(raw: bytes, code: str, says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        bodies.decode(raw, Order)

    assert caught.value.status == 400
    assert caught.value.code == code and says in caught.value.message, caught.value.message


def test_a_good_body_is_the_typed_value() -> None:
    order = bodies.decode(b'{"email": "a@b", "parts": [{"kind": "nut"}]}', Order)

    assert order == Order(email="a@b", parts=[Part(kind="nut")])


async def test_a_declared_body_type_answers_its_400s_over_http(embedded_studio) -> None:
    client = await embedded_studio([sample])

    wrong_type = await client.post("/api/sample/notes", json={"n": "seven"})
    not_json = await client.post("/api/sample/notes", data=b"n=7", headers={"Content-Type": "text/plain"})
    missing = await client.post("/api/sample/notes", json={"note": "hi"})

    assert wrong_type.status == 400 and (await wrong_type.json())["error"]["code"] == "invalid_n"
    assert not_json.status == 400 and (await not_json.json())["error"]["code"] == "unsupported_media_type"
    error = (await missing.json())["error"]
    assert missing.status == 400 and error == {"code": "invalid_n", "message": "n is required"}
    ok = await client.post("/api/sample/notes", json={"n": 7, "note": "hi"})
    assert ok.status == 201 and await ok.json() == {"n": 7}
