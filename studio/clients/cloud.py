"""An OpenAI-compatible cloud API as a model's fallback, spoken to as if it were an Ollama node.

`chat()` takes the body the studio would send to Ollama's `/api/chat` and yields lines in Ollama's
shape (`{"message": {"content"}, "done": false}` ..., then `{"done": true, "done_reason",
"prompt_eval_count", "eval_count"}`), so the chat relay and both wires stay as they are. Errors are
the Ollama client's (`OllamaUnavailable`, `OllamaBusy`, `OllamaError`), so they read the same to the
visitor. Only text and images travel; Ollama's `options` map to OpenAI's fields where one exists.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from studio.clients.ollama import OllamaBusy, OllamaError, OllamaUnavailable

OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "num_predict": "max_tokens", "stop": "stop"}
FINISH = {"stop": "stop", "length": "length"}


def openai_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    messages = []
    for m in body.get("messages") or []:
        content: Any = m.get("content") or ""
        if m.get("images"):
            content = [{"type": "text", "text": content}] + [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}} for img in m["images"]
            ]
        messages.append({"role": m.get("role", "user"), "content": content})
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for name, theirs in OPTIONS.items():
        value = (body.get("options") or {}).get(name)
        if value is not None and not (name == "num_predict" and value < 0):
            out[theirs] = value
    return out


class CloudFallback:
    def __init__(self, api_key: str = "", *, connect_timeout: float = 5.0) -> None:
        self.api_key = api_key
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @asynccontextmanager
    async def chat(
        self, base_url: str, model: str, body: dict[str, Any], *, idle_timeout: float = 60.0
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = base_url.rstrip("/") + "/chat/completions"
        try:
            resp = await self.session.post(
                url,
                json=openai_body(body, model),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=idle_timeout),
            )
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise OllamaUnavailable(f"the cloud fallback at {base_url} is unreachable: {exc or 'timed out'}") from None
        try:
            if resp.status >= 400:
                text = (await resp.text())[:300]
                if resp.status in (429, 503):
                    raise OllamaBusy(f"the cloud fallback is busy ({resp.status}): {text}", resp.status)
                raise OllamaError(f"the cloud fallback answered {resp.status}: {text}", resp.status)
            yield _lines(resp, base_url)
        finally:
            resp.close()


async def _lines(resp: aiohttp.ClientResponse, base_url: str) -> AsyncIterator[dict[str, Any]]:
    finish, usage = "stop", dict[str, Any]()
    try:
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                yield {
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": FINISH.get(finish, "stop"),
                    "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
                    "eval_count": int(usage.get("completion_tokens") or 0),
                }
                return
            chunk = json.loads(data)
            if "error" in chunk:
                raise OllamaError(f"the cloud fallback failed: {chunk['error']}")
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield {"message": {"role": "assistant", "content": text}, "done": False}
    except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise OllamaUnavailable(f"the stream from the cloud fallback at {base_url} broke: {exc}") from None
    except json.JSONDecodeError as exc:
        raise OllamaError(f"the cloud fallback sent a line that is not JSON: {exc}") from None
    raise OllamaUnavailable("the cloud fallback's stream ended before [DONE] (connection cut)")
