"""The rest of what Ollama's OpenAI-compatible layer serves, with the clients that use it: `completions.create`,
`models.retrieve`, `/v1/models` while Ollama is down, a wrong /v1 path, token-id embeddings, and LangChain's
structured output (`parallel_tool_calls: false`) and `OpenAIEmbeddings` with its defaults."""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from tests.doubles.ollama import DEFAULT_REPLY, OllamaDouble, tokenize
from tests.functions.accounts.conftest import FREE, OTHER_PAID, PAID
from tests.functions.accounts.test_openai_client import signed_up_with_key
from tests.support import imported_when_used

if TYPE_CHECKING:
    import langchain_openai
    import openai
else:  # imported by the first test that uses it (tests/support.py)
    openai = imported_when_used("openai")
    langchain_openai = imported_when_used("langchain_openai")


EMBEDDER, TOOLER = "nomic-embed-text:latest", "qwen2.5:0.5b"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture
async def double():
    async with OllamaDouble(installed=[FREE, PAID, OTHER_PAID, EMBEDDER, TOOLER]) as d:
        yield d


@pytest.fixture
async def signed_up(make_studio):
    studio = await make_studio(first_user_is_operator=False)
    _, created, client = await signed_up_with_key(studio)
    yield studio, created["key"], client
    await client.close()


async def test_a_whole_and_a_streamed_text_completion(signed_up, double) -> None:
    _, _, client = signed_up

    whole = await client.completions.create(model=FREE, prompt="Once upon a time", max_tokens=50, temperature=0.1)

    assert whole.object == "text_completion" and whole.choices[0].text == DEFAULT_REPLY
    assert whole.choices[0].finish_reason == "stop" and whole.usage.completion_tokens == len(tokenize(DEFAULT_REPLY))
    sent = double.chat_requests[-1]
    assert sent["messages"] == [{"role": "user", "content": "Once upon a time"}]
    assert sent["options"] == {"temperature": 0.1, "num_predict": 50}

    stream = await client.completions.create(
        model=FREE, prompt="Once", max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "".join(tokenize(DEFAULT_REPLY)[:4])
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 4

    with pytest.raises(openai.BadRequestError) as refused:
        await client.completions.create(model=FREE, prompt="x", suffix="y")
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "suffix"


async def test_models_retrieve_answers_from_the_catalog_and_ownership(signed_up) -> None:
    _, _, client = signed_up

    model = await client.models.retrieve(FREE)
    assert model.id == FREE and model.object == "model"
    with pytest.raises(openai.PermissionDeniedError):
        await client.models.retrieve(PAID)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("no-such-model")
    assert missing.value.code == "unknown_model"


async def test_the_model_list_answers_while_ollama_is_down(signed_up, double) -> None:
    _, _, client = signed_up
    free = {FREE, EMBEDDER, TOOLER}  # installed and free; the paid ones are not owned
    assert {m.id for m in (await client.models.list()).data} == free

    async with double.down():
        assert {m.id for m in (await client.models.list()).data} == free


async def test_a_key_on_a_path_that_does_not_exist_is_a_404_in_openai_shape(signed_up) -> None:
    _, _, client = signed_up

    with pytest.raises(openai.NotFoundError) as missing:
        await client.post("/assistants", body={}, cast_to=object)
    assert missing.value.code == "no_route" and missing.value.type == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as wrong_method:
        await client.get("/responses", cast_to=object)
    assert wrong_method.value.status_code == 405


async def test_token_id_embeddings_are_the_texts_they_encode(signed_up) -> None:
    _, _, client = signed_up
    hello = [15339, 1917]  # "hello world" in cl100k_base

    by_text = await client.embeddings.create(model=EMBEDDER, input="hello world", encoding_format="float")
    by_ids = await client.embeddings.create(model=EMBEDDER, input=hello, encoding_format="float")
    many = await client.embeddings.create(model=EMBEDDER, input=[hello, [15339]], encoding_format="float")

    assert by_ids.data[0].embedding == by_text.data[0].embedding
    assert many.data[0].embedding == by_text.data[0].embedding and len(many.data) == 2
    with pytest.raises(openai.BadRequestError) as outside:
        await client.embeddings.create(model=EMBEDDER, input=[[10**7]])
    assert outside.value.code == "invalid_input" and outside.value.param == "input[0]"


class Answer(BaseModel):
    city: str
    celsius: int


async def test_langchain_structured_output_and_embeddings_with_their_defaults(
    signed_up, double, tmp_path: Path, monkeypatch
) -> None:
    studio, key, _ = signed_up
    base = studio.url("/v1")
    # LangChain tokenizes on the client with tiktoken, which downloads cl100k_base: give it the shipped copy
    cache = tmp_path / "tiktoken"
    cache.mkdir()
    shipped = (files("tiktoken_ext") / "data" / "cl100k_base.tiktoken").read_bytes()
    (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(shipped)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    chat = langchain_openai.ChatOpenAI(model=TOOLER, base_url=base, api_key=key, max_retries=0)
    answer = await chat.with_structured_output(Answer, method="function_calling").ainvoke("Weather in Paris?")
    assert isinstance(answer, Answer)
    assert double.chat_requests[-1]["tools"][0]["function"]["name"] == "Answer"

    embeddings = langchain_openai.OpenAIEmbeddings(model=EMBEDDER, base_url=base, api_key=key, max_retries=0)
    vectors = await embeddings.aembed_documents(["hello world", "a cat"])
    assert len(vectors) == 2 and len(vectors[0]) == len(await embeddings.aembed_query("hello world"))
    assert vectors[0] == pytest.approx(await embeddings.aembed_query("hello world"))
