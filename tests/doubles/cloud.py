"""A small stand-in for an OpenAI-compatible cloud API (the hybrid fallback's far end), over real HTTP.

Only `POST /v1/chat/completions` with `stream: true`, as the studio's fallback client sends it:
`chat.completion.chunk` lines with `delta.content`, a last chunk with `finish_reason`, a usage chunk
when `stream_options.include_usage` is set, then `data: [DONE]`. It answers `reply` word by word,
records every request (body and Authorization header), and refuses a wrong key with OpenAI's 401.

    async with CloudDouble(api_key="sk-test") as cloud:
        cloud.url  # http://127.0.0.1:<port>/v1, the base_url a catalog's `fallback` names
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

DEFAULT_REPLY = "Answered from the cloud."


class CloudDouble:
    def __init__(self, *, api_key: str = "", reply: str = DEFAULT_REPLY) -> None:
        self.api_key = api_key
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def __aenter__(self) -> CloudDouble:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=401)
        if not body.get("stream"):
            return web.json_response({"error": {"message": "only streaming here"}}, status=400)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "chatcmpl-cloud", "object": "chat.completion.chunk", "created": int(time.time())}
        head["model"] = body.get("model")
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
            chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
            usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
            await resp.write(b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
