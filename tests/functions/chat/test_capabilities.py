"""POST /api/chat with what a model can do: images for vision models, thinking streamed before the answer."""

from __future__ import annotations

import base64

import pytest

from tests.doubles.ollama import DEFAULT_REPLY, DEFAULT_THINKING, OllamaDouble, tokenize
from tests.functions.chat.conftest import FREE, OPERATOR_TOKEN, PAID, read_events
from tests.support import eventually

VISION, THINKER, EMBEDDER = "llava:7b", "deepseek-r1:7b", "nomic-embed-text:latest"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
JPEG, GIF, WEBP = b"\xff\xd8\xff\xe0" + b"\0" * 60, b"GIF89a" + b"\0" * 60, b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 60


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def looking(*images: str, text: str = "What is this?") -> list[dict]:
    return [{"role": "user", "content": text, "images": list(images)}]


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, VISION, THINKER, EMBEDDER]) as d:
        yield d


async def error_of(resp) -> tuple[int, dict]:
    return resp.status, (await resp.json())["error"]


# -- images ------------------------------------------------------------------------------------------


async def test_a_vision_model_is_shown_png_jpeg_webp_and_gif(studio, double) -> None:
    operator = studio.visitor(admin=True)  # llava is paid: the operator may chat with any catalog model
    images = [b64(PNG), "data:image/jpeg;base64," + b64(JPEG), b64(WEBP), b64(GIF)]

    resp = await operator.chat(model=VISION, messages=looking(*images), stream=True)
    events = await read_events(resp)

    assert resp.status == 200 and events[-1][0] == "done"
    assert "".join(d["content"] for name, d in events if name == "token") == DEFAULT_REPLY
    sent = double.chat_requests[-1]["messages"][0]["images"]
    assert [base64.b64decode(i) for i in sent] == [PNG, JPEG, WEBP, GIF], "the data: prefix is dropped"


async def test_images_to_a_model_without_vision_are_refused_before_ollama(embedded, double) -> None:
    status, error = await error_of(await embedded.visitor().chat(model=FREE, messages=looking(b64(PNG))))

    assert status == 400 and error["code"] == "model_has_no_vision" and "TinyLlama" in error["message"]
    assert double.chat_requests == []


@pytest.mark.parametrize(
    ("messages", "status", "code", "names"),
    [
        (looking(b64(b"%PDF-1.7 not an image")), 400, "unsupported_image", "PNG, JPEG, WebP or GIF"),
        (looking(b64(PNG), b64(PNG), b64(PNG), b64(PNG), b64(PNG)), 400, "too_many_images", "at most 4"),
        (looking("not base64!"), 400, "invalid_images", "messages[0].images[0]"),
        (looking(b64(PNG + b"\0" * 3000)), 413, "image_too_large", "2048 bytes"),
        (
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x", "images": [b64(PNG)]}],
            400,
            "invalid_images",
            "only a user message",
        ),
    ],
)
async def test_bad_images_name_the_limit_and_change_nothing(make_studio, double, messages, status, code, names) -> None:
    studio = await make_studio("embedded", chat_max_image_bytes=2048)

    got, error = await error_of(await studio.visitor(admin=True).chat(model=VISION, messages=messages))

    assert (got, error["code"]) == (status, code) and names in error["message"], error
    assert double.chat_requests == []


async def test_images_bigger_than_the_old_body_limit_pass_the_gateway(studio, double) -> None:
    big = b64(PNG + bytes(700_000))  # ~930 KB of base64, each; three of them

    resp = await studio.visitor(admin=True).chat(model=VISION, messages=looking(big, big, big))

    assert resp.status == 200, await resp.text()
    assert len(double.chat_requests[-1]["messages"][0]["images"]) == 3


# -- thinking ------------------------------------------------------------------------------------------


async def test_a_thinking_model_streams_its_thinking_before_the_tokens(studio, double) -> None:
    resp = await studio.visitor(admin=True).chat(model=THINKER, message="Hi", stream=True)
    events = await read_events(resp)

    names = [name for name, _ in events]
    first_token = names.index("token")
    assert names[0] == "thinking" and "thinking" not in names[first_token:] and names[-1] == "done"
    assert "".join(d["content"] for n, d in events if n == "thinking") == DEFAULT_THINKING
    assert "".join(d["content"] for n, d in events if n == "token") == DEFAULT_REPLY
    done = events[-1][1]
    thinking = len(tokenize(DEFAULT_THINKING))
    assert done["thinking_tokens"] == thinking
    assert done["completion_tokens"] == thinking + len(tokenize(DEFAULT_REPLY)), "thinking tokens count in usage"
    assert double.chat_requests[-1]["think"] is True, "on by default for a thinking model"


async def test_a_whole_answer_carries_its_thinking_and_think_false_turns_it_off(embedded, double) -> None:
    operator = embedded.visitor(admin=True)

    whole = await (await operator.chat(model=THINKER, message="Hi")).json()
    off = await (await operator.chat(model=THINKER, message="Hi", think=False)).json()

    assert whole["thinking"] == DEFAULT_THINKING and whole["response"] == DEFAULT_REPLY
    assert "thinking" not in off and off["response"] == DEFAULT_REPLY and off["thinking_tokens"] == 0
    assert double.chat_requests[-1]["think"] is False


async def test_think_is_only_for_thinking_models_and_embedding_models_do_not_chat(embedded, double) -> None:
    visitor = embedded.visitor()

    think, error = await error_of(await visitor.chat(model=FREE, message="Hi", think=True))
    assert think == 400 and error["code"] == "invalid_think"
    bad, error = await error_of(await visitor.chat(model=FREE, message="Hi", think="yes"))
    assert bad == 400 and error["code"] == "invalid_think"
    embed, error = await error_of(await visitor.chat(model=EMBEDDER, message="Hi"))
    assert embed == 400 and error["code"] == "not_a_chat_model"
    assert double.chat_requests == []

    assert (await visitor.chat(model=FREE, message="Hi", think=False)).status == 200
    assert "think" not in double.chat_requests[-1], "a model that does not think is not asked to"


async def test_the_chat_body_limit_follows_the_image_settings(make_studio, double) -> None:
    small = await make_studio("embedded", chat_max_images=1, chat_max_image_bytes=100_000)
    limit = small.settings.chat_max_body_bytes
    assert limit == 133_336 + small.settings.chat_max_text_body_bytes  # one image's base64, and the text's room
    big = b64(PNG + bytes(2_000_000))  # the gateway refuses it before the chat function reads it

    status, error = await error_of(await small.visitor(admin=True).chat(model=VISION, messages=looking(big)))

    assert status == 413 and error["code"] == "payload_too_large" and str(limit) in error["message"]
    assert double.chat_requests == []


# -- /v1 through the hop: embeddings and the usage facts -----------------------------------------------------


async def test_embeddings_and_thinking_tokens_reach_the_usage_facts_embedded_and_distributed(studio, double) -> None:
    visitor = studio.visitor()
    headers = {**visitor.headers, "Content-Type": "application/json"}

    resp = await studio.client.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": ["one", "two"], "dimensions": 8}, headers=headers
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert [(d["index"], len(d["embedding"])) for d in body["data"]] == [(0, 8), (1, 8)]
    assert double.embed_requests[-1] == {"model": EMBEDDER, "input": ["one", "two"], "dimensions": 8}

    resp = await studio.client.post(
        "/v1/chat/completions",
        json={"model": THINKER, "messages": [{"role": "user", "content": "Hi"}]},
        headers={**headers, "Authorization": f"Bearer {OPERATOR_TOKEN}"},
    )
    assert resp.status == 200

    def facts():
        done = {e.data["model"]: e.data for e in studio.events.items if e.type == "chat.completed"}
        return done if len(done) == 2 else None

    done = await eventually(facts, message="both usage facts")
    embedded, thought = done[EMBEDDER], done[THINKER]
    assert embedded["model"] == EMBEDDER and embedded["done_reason"] == "embedded"
    assert embedded["prompt_tokens"] == body["usage"]["prompt_tokens"] > 0 and embedded["completion_tokens"] == 0
    assert thought["model"] == THINKER and thought["thinking_tokens"] == len(tokenize(DEFAULT_THINKING))
