"""The OpenAI-compatible API with the official `openai` Python client and a personal API key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.doubles.ollama import DEFAULT_REPLY, tokenize
from tests.functions.accounts.conftest import FREE, OTHER_PAID, PAID
from tests.support import eventually, imported_when_used, sdk_http

if TYPE_CHECKING:
    import openai
else:  # imported by the first test that uses it (tests/support.py)
    openai = imported_when_used("openai")


async def signed_up_with_key(studio, email: str = "dev@example.com"):
    browser = studio.browser()
    await browser.visit()
    status, _ = await browser.signup(email)
    assert status == 201
    status, created, _ = await browser.request("POST", "/api/account/keys", {"name": "script"})
    assert status == 201
    client = openai.AsyncOpenAI(
        api_key=created["key"], base_url=studio.url("/v1"), max_retries=0, http_client=sdk_http(openai)
    )
    return browser, created, client


@pytest.fixture
async def signed_up(make_studio):
    studio = await make_studio(first_user_is_operator=False)
    browser, created, client = await signed_up_with_key(studio)
    yield studio, browser, created, client
    await client.close()


async def test_models_lists_free_and_owned_installed_models(signed_up) -> None:
    _, browser, _, client = signed_up

    assert [m.id for m in (await client.models.list()).data] == [FREE]

    status, _, _ = await browser.request("POST", f"/api/models/purchase/{PAID}")
    assert status == 200
    ids = await eventually(lambda: _model_ids(client, PAID), message="the purchase to reach chat")
    assert set(ids) == {FREE, PAID} and OTHER_PAID not in ids


async def _model_ids(client, wanted: str):
    ids = [m.id for m in (await client.models.list()).data]
    return ids if wanted in ids else None


async def test_a_whole_completion(signed_up, double) -> None:
    _, _, _, client = signed_up

    reply = await client.chat.completions.create(
        model=FREE,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        temperature=0.2,
        top_p=0.9,
        max_tokens=100,
        seed=7,
        stop=["\n\n"],
    )

    assert reply.object == "chat.completion" and reply.model == FREE
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content == DEFAULT_REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == len(tokenize(DEFAULT_REPLY)) and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    sent = double.chat_requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["options"] == {"temperature": 0.2, "top_p": 0.9, "seed": 7, "num_predict": 100, "stop": ["\n\n"]}


async def test_a_streamed_completion_with_usage(signed_up) -> None:
    _, _, _, client = signed_up

    stream = await client.chat.completions.create(
        model=FREE,
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
        max_completion_tokens=5,
    )
    chunks = [chunk async for chunk in stream]

    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == "".join(tokenize(DEFAULT_REPLY)[:5]) and len(content) == 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


async def test_a_revoked_key_is_an_authentication_error_at_once(signed_up) -> None:
    _, browser, created, client = signed_up
    assert (await client.models.list()).data

    assert (await browser.request("DELETE", f"/api/account/keys/{created['id']}"))[0] == 204

    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model=FREE, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.code == "invalid_api_key"


async def test_an_unowned_paid_model_is_permission_denied(signed_up) -> None:
    _, _, _, client = signed_up

    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model=PAID, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.code == "not_owned" and caught.value.type == "permission_error"


async def test_errors_keep_their_statuses(signed_up, double) -> None:
    _, _, _, client = signed_up
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    assert missing.value.code == "unknown_model"
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=FREE, messages=[{"role": "robot", "content": "Hi"}])
    assert refused.value.code == "invalid_messages"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=FREE, messages=[{"role": "user", "content": "Hi"}], n=3)
    double.uninstall(FREE)
    with pytest.raises(openai.ConflictError) as absent:
        await client.chat.completions.create(model=FREE, messages=[{"role": "user", "content": "Hi"}])
    assert absent.value.code == "not_installed"


async def test_a_signed_in_browser_may_call_v1_too_and_nobody_else(signed_up) -> None:
    studio, browser, _, _ = signed_up
    status, body, _ = await browser.request(
        "POST", "/v1/chat/completions", {"model": FREE, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert status == 200 and body["choices"][0]["message"]["content"] == DEFAULT_REPLY

    status, error, _ = await studio.browser().request(
        "POST", "/v1/chat/completions", {"model": FREE, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert status == 401 and set(error["error"]) >= {"message", "type", "code"}


async def test_usage_per_model_per_day_is_counted_for_the_account_and_the_operator_sees_everyone(make_studio) -> None:
    studio = await make_studio()
    operator = studio.browser()
    await operator.signup("op@example.com")  # the first account: the operator
    browser, _, client = await signed_up_with_key(studio, "counted@example.com")
    reply = await client.chat.completions.create(model=FREE, messages=[{"role": "user", "content": "Hello"}])
    status, _ = await browser.chat(FREE)
    assert status == 200
    await client.close()

    async def usage():
        status, body, _ = await browser.request("GET", "/api/account/usage?days=30")
        assert status == 200
        return body["usage"] if body["usage"] and body["usage"][0]["answers"] == 2 else None

    rows = await eventually(usage, message="both answers to be counted")
    assert len(rows) == 1 and rows[0]["model"] == FREE and rows[0]["answers"] == 2
    assert rows[0]["completion_tokens"] == 2 * reply.usage.completion_tokens
    assert rows[0]["prompt_tokens"] == 2 * reply.usage.prompt_tokens

    _, me, _ = await browser.request("GET", "/api/account")
    status, everyone, _ = await operator.request("GET", "/api/account/usage?days=7&all=1")
    assert status == 200 and [(r["user_id"], r["answers"]) for r in everyone["usage"]] == [(me["id"], 2)]
    status, error, _ = await browser.request("GET", "/api/account/usage?days=0")
    assert status == 400 and error["error"]["code"] == "invalid_days"
    status, error, _ = await studio.browser().request("GET", "/api/account/usage")
    assert status == 401
