"""Who may chat with what, and how much: ownership, the catalog, installs, limits, bad requests."""

from __future__ import annotations

import pytest

from studio.runtime.server import function_app
from tests.functions.chat.conftest import FREE, MODES, PAID, chat, read_events
from tests.support import eventually


async def error_of(resp) -> tuple[int, dict]:
    return resp.status, (await resp.json())["error"]


# -- entitlements ------------------------------------------------------------------------------------


async def test_a_paid_model_needs_a_purchase_and_a_refund_takes_it_back(studio) -> None:
    visitor = studio.visitor()

    status, error = await error_of(await visitor.chat(model=PAID, message="Hello"))
    assert status == 403 and error["code"] == "not_owned"
    assert "marketplace" in error["message"] and PAID in error["message"]

    purchase_id = await visitor.buy(PAID)
    assert (await visitor.chat(model=PAID, message="Hello")).status == 200
    other = studio.visitor()
    assert (await other.chat(model=PAID, message="Hello")).status == 403, "ownership is per visitor"

    await visitor.refund(purchase_id, PAID)
    assert (await visitor.chat(model=PAID, message="Hello")).status == 403


async def test_free_models_are_for_everyone_and_the_operator_may_use_any_catalog_model(embedded) -> None:
    assert (await embedded.visitor().chat(model=FREE, message="Hello")).status == 200
    assert (await embedded.visitor(admin=True).chat(model=PAID, message="Hello")).status == 200


async def test_model_names_are_matched_like_ollama_does(embedded, double) -> None:
    resp = await embedded.visitor().chat(model="TinyLlama", message="Hello")

    assert resp.status == 200 and (await resp.json())["model"] == FREE
    assert double.chat_requests[-1]["model"] == FREE


async def test_a_model_outside_the_catalog_is_a_404_even_if_ollama_has_it(embedded, double) -> None:
    double.preinstall("secret-model:latest")

    status, error = await error_of(await embedded.visitor(admin=True).chat(model="secret-model", message="Hi"))

    assert status == 404 and error["code"] == "unknown_model"
    assert double.chat_requests == []


@pytest.mark.parametrize("mode", MODES)
async def test_an_owned_model_that_is_not_installed_is_a_409_pointing_at_install(mode, make_studio, double) -> None:
    studio = await make_studio(mode)
    double.uninstall(PAID)
    visitor = studio.visitor()
    await visitor.buy(PAID)

    for stream in (False, True):
        status, error = await error_of(await visitor.chat(model=PAID, message="Hello", stream=stream))
        assert status == 409 and error["code"] == "not_installed"
        assert "POST /api/models/install" in error["message"] and PAID in error["message"]


async def test_without_a_visitor_session_the_function_refuses(chat_settings, aiohttp_client) -> None:
    client = await aiohttp_client(function_app(chat, chat_settings))  # no gateway: no identity headers

    status, error = await error_of(await client.post("/api/chat", json={"model": FREE, "message": "Hi"}))

    assert status == 401 and error["code"] == "no_session"


# -- limits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_too_many_answers_at_once_is_a_429_with_retry_after(mode, make_studio, double) -> None:
    studio = await make_studio(mode, chat_concurrent_per_visitor=2)
    double.tokens_per_s = 20
    double.reply = "word " * 400
    visitor = studio.visitor()
    streams = [await visitor.chat(model=FREE, message="Hi", stream=True) for _ in range(2)]
    for resp in streams:
        await read_events(resp, limit=1)

    resp = await visitor.chat(model=FREE, message="Hi", stream=True)
    status, error = await error_of(resp)
    assert status == 429 and error["code"] == "too_many_generations" and resp.headers["Retry-After"] == "1"
    assert (await studio.visitor().chat(model=FREE, message="Hi", options={"max_tokens": 2})).status == 200, (
        "another visitor is not limited"
    )

    streams[0].close()
    await double.wait_for_disconnect(kind="chat")
    await _until_admitted(visitor)
    streams[1].close()


async def _until_admitted(visitor) -> None:
    async def admitted() -> bool:  # the slot frees when the stopped answer's handler has ended
        return (await visitor.chat(model=FREE, message="Hi", options={"max_tokens": 2})).status == 200

    await eventually(admitted, interval=0.05, message="the stopped answer's slot to be freed")


async def test_too_many_requests_a_minute_is_a_429_with_retry_after(make_studio) -> None:
    studio = await make_studio("embedded", chat_requests_per_minute=3)
    visitor = studio.visitor()

    statuses = [(await visitor.chat(model=FREE, message="Hi")).status for _ in range(3)]
    resp = await visitor.chat(model=FREE, message="Hi")

    assert statuses == [200, 200, 200]
    status, error = await error_of(resp)
    assert status == 429 and error["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 20  # one request regained every 20 s
    assert (await studio.visitor().chat(model=FREE, message="Hi")).status == 200


async def test_the_daily_quota_counts_the_prompt_and_cuts_the_answer_at_what_is_left(make_studio, double) -> None:
    """Issue 23: a long prompt spends the day's tokens too, and an answer stops where the quota does."""
    double.reply = " word" * 500  # far longer than the day's 120 tokens
    studio = await make_studio("embedded", chat_tokens_per_day=120)
    visitor = studio.visitor()
    prompt = "x" * 200  # about 50 tokens by the studio's estimate (4 characters a token)

    first = await (await visitor.chat(model=FREE, message=prompt)).json()

    assert first["done_reason"] == "length", "the answer was cut, not finished"
    assert first["prompt_tokens"] + first["completion_tokens"] <= 120 + 10  # the estimate errs by a few
    status, error = await error_of(await visitor.chat(model=FREE, message=prompt))
    assert status == 429 and error["code"] == "daily_tokens_exhausted"
    assert (await studio.visitor().chat(model=FREE, message="Hi")).status == 200, "another caller has their own day"


# -- bad requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "names"),
    [
        ({"message": "Hi"}, "invalid_model", "model"),
        ({"model": FREE}, "invalid_messages", "messages"),
        ({"model": FREE, "message": "x" * 200_001}, "invalid_message", "200000"),
        ({"model": FREE, "messages": [{"role": "user", "content": "x"}] * 501}, "invalid_messages", "500"),
        (
            {"model": FREE, "messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "x"}]},
            "invalid_messages",
            "messages[1].role",
        ),
        (
            {"model": FREE, "messages": [{"role": "user", "content": "Hi", "images": ["..."]}]},
            "invalid_images",
            "messages[0].images",
        ),
        ({"model": FREE, "message": "Hi", "options": {"temperature": 5}}, "invalid_options", "options.temperature"),
        ({"model": FREE, "message": "Hi", "options": {"num_ctx": 100000}}, "invalid_options", "options.num_ctx"),
        ({"model": FREE, "message": "Hi", "stream": "yes"}, "invalid_stream", "stream"),
        ({"model": FREE, "message": "Hi", "temperature": 0.5}, "unknown_field", "temperature"),
    ],
)
async def test_bad_requests_are_400s_naming_the_field(embedded, double, body, code, names) -> None:
    status, error = await error_of(await embedded.visitor().chat(**body))

    assert status == 400 and error["code"] == code and names in error["message"], error
    assert double.chat_requests == [], "nothing reached Ollama"


async def test_a_body_that_is_not_json_is_a_400(embedded) -> None:
    status, error = await error_of(await embedded.visitor().post(b"{nope"))

    assert status == 400 and error["code"] == "invalid_json"
