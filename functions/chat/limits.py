"""Per-caller limits on chat, shared by every chat replica: answers generating at once, chat requests
started per minute, and (optionally) tokens a day. Counted in the database, so two replicas (or ten)
hold one limit, not one each.

The per-minute limit is a token bucket holding STUDIO_CHAT_REQUESTS_PER_MINUTE requests, refilled evenly
over a minute: a caller may use the whole minute's allowance at once, then one more every 60/N seconds.
Answers at once are rows of `chat_generating`, removed when the answer ends (a replica that dies leaves
rows that stop counting after `STALE_S`). Tokens a day (STUDIO_CHAT_TOKENS_PER_DAY, 0 = no limit) are
read from `chat_usage`, which `record_usage` keeps per caller, model and UTC day. Refusals are 429s with
`Retry-After`; a refused request changes nothing.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from studio.runtime.database import Database
from studio.runtime.errors import TooManyRequests

STALE_S = 1800.0  # an answer still "generating" after this long was lost with its replica
FORGET_S = 86400.0  # allowances untouched this long are full again: their rows are deleted


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


class SharedLimits:
    def __init__(
        self,
        db: Database,
        *,
        concurrent: int,
        per_minute: int,
        tokens_per_day: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.concurrent = concurrent
        self.per_minute = per_minute
        self.tokens_per_day = tokens_per_day
        self.rate = per_minute / 60.0  # requests regained per second
        self.clock = clock
        self._admitted = 0

    @asynccontextmanager
    async def admit(self, user_id: str) -> AsyncIterator[None]:
        """Hold one of the caller's generation slots for the block, or raise TooManyRequests."""
        answer_id = secrets.token_hex(8)
        now = self.clock()
        if self.tokens_per_day:
            await self._within_daily_tokens(user_id, now)
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(  # one round trip: the allowance and the answers generating now
                "SELECT (SELECT tokens FROM chat_allowances WHERE user_id = ?) AS tokens, "
                "(SELECT updated_at FROM chat_allowances WHERE user_id = ?) AS updated_at, "
                "(SELECT COUNT(*) FROM chat_generating WHERE user_id = ? AND started_at > ?) AS generating",
                (user_id, user_id, user_id, now - STALE_S),
            )
            assert row is not None
            tokens = (
                float(self.per_minute)
                if row["tokens"] is None
                else min(float(self.per_minute), row["tokens"] + max(0.0, now - row["updated_at"]) * self.rate)
            )
            generating = int(row["generating"])
            if generating >= self.concurrent:
                raise TooManyRequests(
                    f"you already have {generating} answers being generated (the limit is {self.concurrent}); "
                    "wait for one to finish or stop it",
                    code="too_many_generations",
                    headers={"Retry-After": "1"},
                )
            if tokens < 1:
                wait = math.ceil((1 - tokens) / self.rate)
                raise TooManyRequests(
                    f"too many chat requests: at most {self.per_minute} a minute; try again in {wait} s",
                    code="rate_limited",
                    headers={"Retry-After": str(wait)},
                )
            await tx.execute(
                "INSERT INTO chat_allowances (user_id, tokens, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
                (user_id, tokens - 1, now),
            )
            await tx.execute(
                "INSERT INTO chat_generating (answer_id, user_id, started_at) VALUES (?, ?, ?)",
                (answer_id, user_id, now),
            )
            self._admitted += 1
            if self._admitted % 1024 == 0:
                await tx.execute("DELETE FROM chat_allowances WHERE updated_at < ?", (now - FORGET_S,))
                await tx.execute("DELETE FROM chat_generating WHERE started_at < ?", (now - STALE_S,))
        try:
            yield
        finally:
            await self.db.execute("DELETE FROM chat_generating WHERE answer_id = ?", (answer_id,))

    async def _within_daily_tokens(self, user_id: str, now: float) -> None:
        row = await self.db.fetch_one(
            "SELECT SUM(prompt_tokens + completion_tokens) AS used FROM chat_usage WHERE user_id = ? AND day = ?",
            (user_id, day_of(now)),
        )
        used = int(row["used"] or 0) if row else 0
        if used >= self.tokens_per_day:
            midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            wait = math.ceil((midnight + timedelta(days=1)).timestamp() - now)
            raise TooManyRequests(
                f"you have used your {self.tokens_per_day} tokens for today; more from midnight UTC",
                code="daily_tokens_exhausted",
                headers={"Retry-After": str(max(1, wait))},
            )

    async def generating(self, user_id: str) -> int:
        row = await self.db.fetch_one(
            "SELECT COUNT(*) AS n FROM chat_generating WHERE user_id = ? AND started_at > ?",
            (user_id, self.clock() - STALE_S),
        )
        return int(row["n"]) if row else 0


async def record_usage(db: Database, user_id: str, model: str, prompt: int, completion: int, at: float) -> None:
    await db.execute(
        "INSERT INTO chat_usage (user_id, model, day, prompt_tokens, completion_tokens, answers) "
        "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (user_id, model, day) DO UPDATE SET "
        "prompt_tokens = chat_usage.prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = chat_usage.completion_tokens + excluded.completion_tokens, "
        "answers = chat_usage.answers + 1",
        (user_id, model, day_of(at), prompt, completion),
    )


async def usage_of(db: Database, user_id: str | None, days: int, now: float) -> list[dict[str, Any]]:
    """Tokens per model per day over the last `days` days: one caller's, or everyone's (user_id None)."""
    since = day_of(now - (days - 1) * 86400)
    if user_id is None:
        rows = await db.fetch_all(
            "SELECT day, model, user_id, prompt_tokens AS p, completion_tokens AS c, answers AS n "
            "FROM chat_usage WHERE day >= ? ORDER BY day, model, user_id",
            (since,),
        )
        return [
            {
                "day": r["day"],
                "model": r["model"],
                "user_id": r["user_id"],
                "prompt_tokens": r["p"],
                "completion_tokens": r["c"],
                "answers": r["n"],
            }
            for r in rows
        ]
    else:
        rows = await db.fetch_all(
            "SELECT day, model, prompt_tokens AS p, completion_tokens AS c, answers AS n "
            "FROM chat_usage WHERE user_id = ? AND day >= ? ORDER BY day, model",
            (user_id, since),
        )
    return [
        {"day": r["day"], "model": r["model"], "prompt_tokens": r["p"], "completion_tokens": r["c"], "answers": r["n"]}
        for r in rows
    ]
