"""The OpenAI-compatible API over a fleet, with the official `openai` client: it goes through the same
node choice as /api/chat, so a node that refuses connections is passed over, streamed or not."""

from __future__ import annotations

from tests.conftest import free_port
from tests.doubles.ollama import DEFAULT_REPLY
from tests.functions.accounts.conftest import FREE
from tests.functions.accounts.test_openai_client import signed_up_with_key


async def test_a_node_down_is_passed_over_by_v1_chat_completions(make_studio, double) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    studio = await make_studio(first_user_is_operator=False, ollama_urls=(down, double.url))
    _, _, client = await signed_up_with_key(studio)
    try:
        whole = await client.chat.completions.create(model=FREE, messages=[{"role": "user", "content": "Hi"}])
        stream = await client.chat.completions.create(
            model=FREE, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    finally:
        await client.close()

    assert whole.choices[0].message.content == DEFAULT_REPLY and text == DEFAULT_REPLY
    assert len(double.chat_requests) == 2
