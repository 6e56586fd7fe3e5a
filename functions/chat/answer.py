"""One answer being generated: its timings and token counts, how it ended, and the usage fact it becomes.

Only usage leaves this module (model, visitor, counts, timings): never the conversation's content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from events.bus import BusUnavailable
from events.catalog import ChatCancelled, ChatCompleted, ChatFailed, EventData
from events.envelope import Event
from studio.runtime.errors import UpstreamUnavailable

COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"


def _ms(ns: Any) -> float | None:
    return round(ns / 1e6, 3) if isinstance(ns, int | float) and ns > 0 else None


APIS = ("chat", "responses", "messages", "completions", "embeddings")  # the dialects, as usage events name them


class Answer:
    def __init__(
        self,
        model: str,
        user_id: str,
        started: float | None = None,
        key_id: str | None = None,
        *,
        api: str = "chat",
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}")
        self.api = api  # which dialect was asked: the usage event says so, and metrics split by it
        self.model = model
        self.user_id = user_id
        self.key_id = key_id  # the personal API key used, if any (never the key itself)
        self.started = time.perf_counter() if started is None else started
        self.first_token_at: float | None = None
        self.chunks = 0  # content chunks received (Ollama sends about one per token)
        self.thinking_chunks = 0  # a thinking model's reasoning chunks (they count as completion tokens too)
        self.final: dict[str, Any] = {}  # Ollama's last line (done: true), with its metrics
        self.outcome: str | None = None
        self.reason = ""
        self.ended_at: float | None = None
        self.node: str | None = None  # the Ollama node answering, or "fallback"

    def served_by(self, node: str) -> None:
        self.node = node

    @property
    def fallback(self) -> bool:
        return self.node == "fallback"

    # -- while generating ------------------------------------------------------------------------

    def token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.chunks += 1

    def tokens(self, n: int) -> None:
        """`n` chunks of text that arrived together (one read from Ollama)."""
        if n:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.chunks += n

    def called(self) -> None:
        """Tool calls arrived: the model has answered (first token); Ollama's final count includes their tokens."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def thought(self) -> None:
        """A chunk of reasoning: the model is answering (first token), it is generated and billed like text."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.thinking_chunks += 1

    def complete(self, final: dict[str, Any]) -> None:
        self.final = final
        self._end(COMPLETED)

    def fail(self, reason: str) -> None:
        self._end(FAILED, reason)

    def cancel(self) -> None:
        self._end(CANCELLED)

    def _end(self, outcome: str, reason: str = "") -> None:
        if self.outcome is None:
            self.outcome, self.reason, self.ended_at = outcome, reason, time.perf_counter()

    # -- figures ---------------------------------------------------------------------------------

    @property
    def time_to_first_token_ms(self) -> float | None:
        return None if self.first_token_at is None else round((self.first_token_at - self.started) * 1000, 3)

    @property
    def duration_ms(self) -> float:
        return round(((self.ended_at or time.perf_counter()) - self.started) * 1000, 3)

    def totals(self) -> dict[str, Any]:
        """The figures Ollama reported for a completed answer (the stream's `done` event)."""
        f = self.final
        completion = f.get("eval_count", self.chunks + self.thinking_chunks)  # Ollama's count includes thinking
        eval_ns = f.get("eval_duration")
        return {
            "model": self.model,
            "done_reason": f.get("done_reason", "stop"),
            "prompt_tokens": f.get("prompt_eval_count", 0),
            "completion_tokens": completion,
            "total_duration_ms": _ms(f.get("total_duration")),
            "load_duration_ms": _ms(f.get("load_duration")),
            "prompt_eval_duration_ms": _ms(f.get("prompt_eval_duration")),
            "eval_duration_ms": _ms(eval_ns),
            "tokens_per_s": round(completion / eval_ns * 1e9, 2) if eval_ns and completion else None,
            "time_to_first_token_ms": self.time_to_first_token_ms,
            "thinking_tokens": self.thinking_chunks,
        }

    def usage(self) -> tuple[int, int]:
        """(prompt, completion) tokens this answer used: Ollama's counts, or the chunks sent before it ended."""
        if self.outcome == COMPLETED:
            t = self.totals()
            return int(t["prompt_tokens"] or 0), int(t["completion_tokens"] or 0)
        return 0, self.chunks

    def event(self) -> EventData | None:
        """The usage fact for the monitor, once the answer has ended."""
        if self.outcome == COMPLETED:
            t = self.totals()
            return ChatCompleted(
                model=self.model,
                user_id=self.user_id,
                key_id=self.key_id,
                node=self.node,
                fallback=self.fallback,
                api=self.api,
                prompt_tokens=t["prompt_tokens"],
                completion_tokens=t["completion_tokens"],
                time_to_first_token_ms=t["time_to_first_token_ms"],
                duration_ms=self.duration_ms,
                tokens_per_s=t["tokens_per_s"],
                done_reason=t["done_reason"],
                thinking_tokens=self.thinking_chunks,
            )
        if self.outcome == FAILED:
            return ChatFailed(
                model=self.model,
                user_id=self.user_id,
                key_id=self.key_id,
                node=self.node,
                fallback=self.fallback,
                api=self.api,
                reason=self.reason,
                completion_tokens=self.chunks + self.thinking_chunks,
                duration_ms=self.duration_ms,
                thinking_tokens=self.thinking_chunks,
            )
        if self.outcome == CANCELLED:
            return ChatCancelled(
                model=self.model,
                user_id=self.user_id,
                key_id=self.key_id,
                node=self.node,
                fallback=self.fallback,
                api=self.api,
                completion_tokens=self.chunks + self.thinking_chunks,
                time_to_first_token_ms=self.time_to_first_token_ms,
                duration_ms=self.duration_ms,
                thinking_tokens=self.thinking_chunks,
            )
        return None


class UsageReports:
    """Outcome events that could not go through the outbox (a full disk), published in the background:
    the visitor never waits on the event bus. (Every other outcome rides in the transaction that frees
    the answer's slot: functions/chat/limits.py.)"""

    def __init__(self, publish: Callable[[Event], Awaitable[object]], log: logging.Logger) -> None:
        self.publish = publish
        self.log = log
        self._pending: set[asyncio.Task[None]] = set()
        self.fallbacks = 0  # answers the cloud fallback gave, since start

    def count(self, answer: Answer) -> None:
        self.fallbacks += answer.fallback

    def send(self, event: Event) -> None:
        task = asyncio.get_running_loop().create_task(self._send(event))  # keeps the correlation id
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, event: Event) -> None:
        try:
            await self.publish(event)
        except (UpstreamUnavailable, BusUnavailable) as exc:
            self.log.warning("a %s event was not published: %s", event.type, exc)
        except Exception:
            self.log.exception("a %s event was not published", event.type)

    async def drain(self, timeout: float = 5.0) -> None:
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pending, return_exceptions=True), timeout)
