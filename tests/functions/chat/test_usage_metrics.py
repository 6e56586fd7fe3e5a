"""The monitor turns chat.* events into usage metrics per model (Prometheus text on /metrics)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from functions import load
from tests.functions.chat.conftest import FREE, OPERATOR_TOKEN, PAID, chat
from tests.support import eventually


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_answers_tokens_and_time_to_first_token_per_model(chat_settings, embedded_studio, double) -> None:
    client = await embedded_studio([chat, load("monitor")], settings_override=chat_settings)
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    for _ in range(2):
        resp = await client.post("/api/chat", json={"model": FREE, "message": "Hello"}, headers=operator)
        assert resp.status == 200
    double.fail_next_chats(after_tokens=2)
    assert (
        await client.post("/api/chat", json={"model": PAID, "message": "Hi", "stream": True}, headers=operator)
    ).status == 200

    async def scrape():
        metrics = samples(await (await client.get("/metrics", headers=operator)).text())
        done = metrics.get(("studio_chat_answers_total", (("model", FREE), ("outcome", "completed"))))
        failed = metrics.get(("studio_chat_answers_total", (("model", PAID), ("outcome", "failed"))))
        return metrics if done == 2 and failed == 1 else None

    metrics = await eventually(scrape, message="chat usage in /metrics")
    reply_tokens = (
        await (await client.post("/api/chat", json={"model": FREE, "message": "Hi"}, headers=operator)).json()
    )["completion_tokens"]
    assert metrics[("studio_chat_tokens_total", (("kind", "completion"), ("model", FREE)))] == 2 * reply_tokens
    assert metrics[("studio_chat_tokens_total", (("kind", "prompt"), ("model", FREE)))] > 0
    assert metrics[("studio_chat_tokens_total", (("kind", "completion"), ("model", PAID)))] == 2
    assert metrics[("studio_chat_time_to_first_token_seconds_count", (("model", FREE),))] == 2
    assert metrics[("studio_chat_time_to_first_token_seconds_bucket", (("le", "+Inf"), ("model", FREE)))] == 2
    assert 0 < metrics[("studio_chat_time_to_first_token_seconds_sum", (("model", FREE),))] < 2


async def test_usage_events_and_metrics_say_which_api_was_asked(chat_settings, embedded_studio, double) -> None:
    """Issue 23: every dialect's usage event names it (`api`), and /metrics splits answers and tokens by it."""
    double.preinstall("nomic-embed-text:latest")
    client = await embedded_studio([chat, load("monitor")], settings_override=chat_settings)
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    asked = [
        ("/api/chat", {"model": FREE, "message": "Hello"}),
        ("/v1/chat/completions", {"model": FREE, "messages": [{"role": "user", "content": "Hello"}]}),
        ("/v1/embeddings", {"model": "nomic-embed-text", "input": "Hello"}),
    ]
    for path, body in asked:
        resp = await client.post(path, json=body, headers=operator)
        assert resp.status == 200, await resp.text()

    async def scrape():
        metrics = samples(await (await client.get("/metrics", headers=operator)).text())
        chats = metrics.get(("studio_chat_api_answers_total", (("api", "chat"), ("outcome", "completed"))))
        embedded = metrics.get(("studio_chat_api_answers_total", (("api", "embeddings"), ("outcome", "completed"))))
        return metrics if chats == 2 and embedded == 1 else None

    metrics = await eventually(scrape, message="answers by api in /metrics")
    assert metrics[("studio_chat_api_tokens_total", (("api", "chat"), ("kind", "completion")))] > 0
    assert metrics[("studio_chat_api_tokens_total", (("api", "embeddings"), ("kind", "prompt")))] > 0
