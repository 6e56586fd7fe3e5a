"""A chat request's validation and how it becomes Ollama's /api/chat body."""

from __future__ import annotations

import pytest

from functions.chat.conversation import parse
from studio.runtime.errors import BadRequest
from studio.runtime.settings import Settings

SETTINGS = Settings.from_env({}, chat_max_tokens=500, chat_max_message_chars=20, chat_max_messages=3)


def test_the_seed_shape_is_one_user_message_with_the_operator_cap() -> None:
    c = parse({"model": "TinyLlama", "message": "Hello"}, SETTINGS)

    assert c.model == "tinyllama:latest" and c.stream is False
    assert c.ollama_body() == {
        "model": "tinyllama:latest",
        "messages": [{"role": "user", "content": "Hello"}],
        "options": {"num_predict": 500},
    }


def test_options_are_translated_and_max_tokens_is_capped() -> None:
    c = parse(
        {
            "model": "m:1",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "options": {"temperature": 0, "top_p": 1, "seed": -3, "max_tokens": 10_000},
        },
        SETTINGS,
    )

    assert c.stream is True
    assert c.options == {"temperature": 0, "top_p": 1, "seed": -3, "num_predict": 500}
    assert parse({"model": "m:1", "message": "Hi", "options": {"max_tokens": 9}}, SETTINGS).options == {
        "num_predict": 9
    }


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ({"model": 3, "message": "Hi"}, "invalid_model", "model must be a string"),
        ({"message": "Hi"}, "invalid_model", "model is required"),
        ({"model": "m", "message": "   "}, "invalid_message", "non-empty"),
        ({"model": "m", "message": "x" * 21}, "invalid_message", "21 characters long; the limit is 20"),
        ({"model": "m", "message": "Hi", "messages": []}, "invalid_messages", "not both"),
        ({"model": "m", "messages": []}, "invalid_messages", "non-empty list"),
        ({"model": "m", "messages": [{"role": "user", "content": "a"}] * 4}, "invalid_messages", "limit is 3"),
        ({"model": "m", "messages": ["Hi"]}, "invalid_messages", "messages[0] must be an object"),
        ({"model": "m", "messages": [{"role": "tool", "content": "a"}]}, "invalid_messages", "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "invalid_messages", "messages[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "x" * 21}]},
            "invalid_messages",
            "messages[1].content is 21 characters",
        ),
        ({"model": "m", "messages": [{"role": "system", "content": "Be brief."}]}, "invalid_messages", "no user"),
        ({"model": "m", "message": "Hi", "options": []}, "invalid_options", "options must be an object"),
        ({"model": "m", "message": "Hi", "options": {"temperature": True}}, "invalid_options", "options.temperature"),
        ({"model": "m", "message": "Hi", "options": {"top_p": 1.5}}, "invalid_options", "options.top_p"),
        ({"model": "m", "message": "Hi", "options": {"top_k": 0}}, "invalid_options", "options.top_k"),
        ({"model": "m", "message": "Hi", "options": {"seed": 1.5}}, "invalid_options", "options.seed"),
        ({"model": "m", "message": "Hi", "options": {"max_tokens": 0}}, "invalid_options", "options.max_tokens"),
        ({"model": "m", "message": "Hi", "options": {"stop": "x"}}, "invalid_options", "options.stop"),
        ({"model": "m", "message": "Hi", "stream": 1}, "invalid_stream", "stream"),
        ({"model": "m", "message": "Hi", "keep_alive": -1}, "unknown_field", "'keep_alive'"),
    ],
)
def test_every_mistake_is_a_400_naming_the_field(body, code, fragment) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(body, SETTINGS)

    assert caught.value.code == code and fragment in caught.value.message, caught.value.message


def test_messages_keep_their_order_and_an_empty_assistant_turn_is_fine() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ""},
    ]

    assert parse({"model": "m", "messages": messages}, SETTINGS).messages == messages
