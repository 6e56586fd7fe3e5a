"""Per-caller limits on chat, shared by every chat replica: answers generating at once, chat requests
started per minute, and (optionally) tokens a day. Counted in the database, so two replicas (or ten)
hold one limit, not one each.

The per-minute limit is a token bucket holding STUDIO_CHAT_REQUESTS_PER_MINUTE requests, refilled evenly
over a minute: a caller may use the whole minute's allowance at once, then one more every 60/N seconds.
Answers at once are rows of `chat_generating`, removed when the answer ends (a replica that dies leaves
rows that stop counting after `STALE_S`). Tokens a day (STUDIO_CHAT_TOKENS_PER_DAY, 0 = no limit) are
read from `chat_usage`, kept per caller, model and UTC day as answers end. Refusals are 429s with
`Retry-After`; a refused request changes nothing.

Admissions and releases are committed in groups (one transaction for everything waiting when the last
one ended), so a burst of requests costs a few commits, not one each (tests/bench/accounts_bench.py).

The transaction that frees an answer's slot also records its usage (`chat_usage`) and its outcome event
(`chat.completed | failed | cancelled`, through the outbox): usage is never lost when NATS is down or
failing over, it is published when NATS is back (issue 21).

Tokens a day count the prompt and the answer; an admitted slot says how many are left (`Slot.remaining`)
so the answer is cut there, not only refused once the day is spent.

An early admission (`admit(..., early=True)`) is committed while the answer starts: the first token
waits for neither the database nor the group commit it may queue behind (tests/bench/relay_bench.py:
under a stream of answers the writer is busy with the last answer's release and outbox). It is early
only when this replica's own count of the caller says the shared count will admit (well within both
limits, and no daily quota to cut the answer at), so a caller near a limit is admitted before Ollama is
asked. What is left, another replica's answers filling the caller's share at the same instant, ends
the answer where the refusal is known: a streamed answer with an `error` event (the code of the 429),
a whole one with the 429 itself. A refused admission records nothing, as any refusal.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from events.envelope import Event
from studio.runtime.database import Database, DatabaseUnavailable, Transaction
from studio.runtime.errors import TooManyRequests, report_database_down
from studio.runtime.shortages import SHORTAGES, is_disk_full

DISK_FULL = "chat limits cannot be written (the disk is full): counted in each process until there is room"
STALE_S = 1800.0  # an answer still "generating" after this long was lost with its replica
FORGET_S = 86400.0  # allowances untouched this long are full again: their rows are deleted
GROUP = 500  # admissions and releases committed together at most
SWEEP_EVERY = 1024  # admissions between sweeps of forgotten allowances and lost answers


def seconds_to_midnight(now: float) -> int:
    """Until the next UTC day, when daily allowances start again (at least 1)."""
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight + timedelta(days=1)).timestamp() - now))


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


@dataclass
class Slot:
    """One admitted answer; what it used (`chat_usage`) and its outcome event (the outbox) are recorded in
    the transaction that frees it: set `model`, the token counts and `event` before leaving the block."""

    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    event: Event | None = None
    remaining: int | None = None  # tokens left today when admitted (None: no daily limit)
    admission: asyncio.Future[None] | None = None  # an early admission still being committed
    written: bool = True  # False: a full disk kept the early admission out of the database

    async def admitted(self) -> None:
        """Wait for an early admission; raises TooManyRequests if it was refused."""
        if self.admission is not None:
            await asyncio.shield(self.admission)

    def refusal(self) -> BaseException | None:
        """The early admission's refusal, if it is known by now (None: admitted, or not known yet)."""
        a = self.admission
        if a is None or not a.done() or a.cancelled():
            return None
        return a.exception()

    @property
    def known(self) -> bool:
        """Whether the admission's outcome is known (always, unless early and still being committed)."""
        return self.admission is None or self.admission.done()


@dataclass
class _Request:
    kind: str  # admit | release
    user_id: str = ""
    answer_id: str = ""
    at: float = 0.0
    slot: Slot | None = None
    done: asyncio.Future[None] | None = None


_ids = itertools.count(1)
_PREFIX = secrets.token_hex(4)


def answer_id() -> str:
    """Unique without a call to the system's random source per answer (a row key, never a secret)."""
    return f"{_PREFIX}{next(_ids):x}"


@dataclass
class _Caller:
    tokens: float
    generating: int


class SharedLimits:
    """Admissions and releases are committed in groups: whoever finds no group running commits everything
    waiting, in arrival order, in one transaction (a burst of 50 requests costs one or two commits, not 50)."""

    def __init__(
        self,
        db: Database,
        *,
        concurrent: int,
        per_minute: int,
        tokens_per_day: int = 0,
        clock: Callable[[], float] = time.time,
        unrecorded: Callable[[Event], None] | None = None,
    ) -> None:
        self.db = db
        self.concurrent = concurrent
        self.per_minute = per_minute
        self.tokens_per_day = tokens_per_day
        self.rate = per_minute / 60.0  # requests regained per second
        self.clock = clock
        self._admitted = 0
        self._waiting: list[_Request] = []
        self._committing = asyncio.Lock()
        self._fallback = LocalLimits(concurrent, per_minute, clock)
        self._mine = LocalLimits(concurrent, per_minute, clock)  # this replica's own count: may it be early?
        self.unrecorded = unrecorded  # outcome events the outbox could not take (a full disk): sent another way

    @asynccontextmanager
    async def admit(self, user_id: str, *, early: bool = False) -> AsyncIterator[Slot]:
        """Hold one of the caller's generation slots for the block, or raise TooManyRequests. Set the
        slot's model, token counts and event before leaving: they are recorded as the slot is freed.

        `early`: the block may start before the admission is committed, when this replica's own count
        says it will pass; then check `slot.refusal()` as the answer goes and `await slot.admitted()`
        before it ends (it raises if refused)."""
        now = self.clock()
        slot = Slot()
        request = _Request("admit", user_id, answer_id(), now, slot)
        mine = self._mine.take(user_id, now)
        if early and not self.tokens_per_day and mine.roomy:
            slot.admission = asyncio.ensure_future(self._early(request, slot))
        try:
            if slot.admission is None:
                await self._submit(request)
        except Exception as exc:
            mine.give_back()
            if not _cannot_write(exc):
                raise
            async with self._fallback.admit(user_id, now) as fallback:  # chat writes nothing else: keep answering
                try:
                    yield fallback
                finally:
                    self._send_unrecorded(fallback)
            return
        try:
            yield slot
        finally:
            mine.give_back()
            if await self._was_admitted(slot):
                try:
                    await self._submit(_Request("release", user_id, request.answer_id, self.clock(), slot))
                except Exception as exc:
                    if not _cannot_write(exc):  # its slot goes stale after STALE_S; usage unrecorded
                        raise
                    self._send_unrecorded(slot)

    async def _early(self, request: _Request, slot: Slot) -> None:
        try:
            await self._submit(request)
        except Exception as exc:
            if not _cannot_write(exc):  # answered all the same, as `admit` does; nothing to free
                raise
            slot.written = False

    async def _was_admitted(self, slot: Slot) -> bool:
        """Whether the slot holds a row to free (an early admission is waited for: it may still commit)."""
        if slot.admission is None:
            return True
        try:
            await asyncio.shield(slot.admission)
        except Exception:
            return False
        if not slot.written:
            self._send_unrecorded(slot)
        return slot.written

    def _send_unrecorded(self, slot: Slot) -> None:
        if slot.event is not None and self.unrecorded is not None:
            self.unrecorded(slot.event)

    async def _submit(self, request: _Request) -> None:
        request.done = asyncio.get_running_loop().create_future()
        self._waiting.append(request)
        async with self._committing:
            while not request.done.done():
                group, self._waiting = self._waiting[:GROUP], self._waiting[GROUP:]
                await self._commit(group)
        request.done.result()  # raises TooManyRequests (or the database's error)

    async def _commit(self, group: list[_Request]) -> None:
        outcomes: dict[int, BaseException | None] = {}
        try:
            async with self.db.transaction() as tx:
                releases = [r for r in group if r.kind == "release"]
                if releases:
                    released = [r.answer_id for r in releases]
                    await tx.execute(f"DELETE FROM chat_generating WHERE answer_id IN ({_marks(released)})", released)
                    await self._count_usage(tx, releases)
                    await tx.publish_many([r.slot.event for r in releases if r.slot and r.slot.event])
                admits = [r for r in group if r.kind == "admit"]
                if admits:
                    outcomes = await self._decide(tx, admits)
        except BaseException as exc:
            for r in group:  # they are not lost: each caller gets the error (or is cancelled with this one)
                if r.done is not None and not r.done.done():
                    if isinstance(exc, Exception):
                        r.done.set_exception(exc)
                    else:
                        r.done.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for r in group:
            if r.done is not None and not r.done.done():
                failure = outcomes.get(id(r))
                if failure is None:
                    r.done.set_result(None)
                else:
                    r.done.set_exception(failure)

    async def _decide(self, tx: Transaction, admits: list[_Request]) -> dict[int, BaseException | None]:
        now = max(r.at for r in admits)
        users = sorted({r.user_id for r in admits})
        callers = {u: _Caller(float(self.per_minute), 0) for u in users}
        for row in await tx.fetch_all(
            f"SELECT user_id, tokens, updated_at FROM chat_allowances WHERE user_id IN ({_marks(users)})", users
        ):
            refilled = row["tokens"] + max(0.0, now - row["updated_at"]) * self.rate
            callers[row["user_id"]].tokens = min(float(self.per_minute), refilled)
        for row in await tx.fetch_all(
            "SELECT user_id, COUNT(*) AS n FROM chat_generating "
            f"WHERE user_id IN ({_marks(users)}) AND started_at > ? GROUP BY user_id",
            [*users, now - STALE_S],
        ):
            callers[row["user_id"]].generating = int(row["n"])
        used: dict[str, int] = {}
        if self.tokens_per_day:
            for row in await tx.fetch_all(
                "SELECT user_id, SUM(prompt_tokens + completion_tokens) AS used FROM chat_usage "
                f"WHERE user_id IN ({_marks(users)}) AND day = ? GROUP BY user_id",
                [*users, day_of(now)],
            ):
                used[row["user_id"]] = int(row["used"] or 0)
        outcomes: dict[int, BaseException | None] = {}
        accepted: list[_Request] = []
        for r in admits:
            c = callers[r.user_id]
            outcomes[id(r)] = refusal = self._refusal(c) or self._daily_refusal(used.get(r.user_id, 0), now)
            if refusal is None:
                if self.tokens_per_day and r.slot is not None:
                    r.slot.remaining = self.tokens_per_day - used.get(r.user_id, 0)
                c.tokens -= 1
                c.generating += 1
                accepted.append(r)
        if accepted:
            touched = sorted({r.user_id for r in accepted})
            await tx.execute(
                "INSERT INTO chat_allowances (user_id, tokens, updated_at) VALUES "
                + ", ".join("(?, ?, ?)" for _ in touched)
                + " ON CONFLICT (user_id) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
                [v for u in touched for v in (u, callers[u].tokens, now)],
            )
            await tx.execute(
                "INSERT INTO chat_generating (answer_id, user_id, started_at) VALUES "
                + ", ".join("(?, ?, ?)" for _ in accepted),
                [v for r in accepted for v in (r.answer_id, r.user_id, r.at)],
            )
            before, self._admitted = self._admitted, self._admitted + len(accepted)
            if before // SWEEP_EVERY != self._admitted // SWEEP_EVERY:
                await tx.execute("DELETE FROM chat_allowances WHERE updated_at < ?", (now - FORGET_S,))
                await tx.execute("DELETE FROM chat_generating WHERE started_at < ?", (now - STALE_S,))
        return outcomes

    async def _count_usage(self, tx: Transaction, releases: list[_Request]) -> None:
        used: dict[tuple[str, str, str], list[int]] = {}
        for r in releases:
            slot = r.slot
            if slot is not None and slot.model and (slot.prompt_tokens or slot.completion_tokens):
                counts = used.setdefault((r.user_id, slot.model, day_of(r.at)), [0, 0, 0])
                counts[0] += slot.prompt_tokens
                counts[1] += slot.completion_tokens
                counts[2] += 1
        if used:  # one row per key: PostgreSQL refuses to update a row twice in one statement
            await tx.execute(
                "INSERT INTO chat_usage (user_id, model, day, prompt_tokens, completion_tokens, answers) VALUES "
                + ", ".join("(?, ?, ?, ?, ?, ?)" for _ in used)
                + " ON CONFLICT (user_id, model, day) DO UPDATE SET "
                "prompt_tokens = chat_usage.prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = chat_usage.completion_tokens + excluded.completion_tokens, "
                "answers = chat_usage.answers + excluded.answers",
                [v for key, counts in used.items() for v in (*key, *counts)],
            )

    def _refusal(self, c: _Caller) -> TooManyRequests | None:
        if c.generating >= self.concurrent:
            return TooManyRequests(
                f"you already have {c.generating} answers being generated (the limit is {self.concurrent}); "
                "wait for one to finish or stop it",
                code="too_many_generations",
                headers={"Retry-After": "1"},
            )
        if c.tokens < 1:
            wait = math.ceil((1 - c.tokens) / self.rate)
            return TooManyRequests(
                f"too many chat requests: at most {self.per_minute} a minute; try again in {wait} s",
                code="rate_limited",
                headers={"Retry-After": str(wait)},
            )
        return None

    def _daily_refusal(self, used: int, now: float) -> TooManyRequests | None:
        if not self.tokens_per_day or used < self.tokens_per_day:
            return None
        return TooManyRequests(
            f"you have used your {self.tokens_per_day} tokens for today; more from midnight UTC",
            code="daily_tokens_exhausted",
            headers={"Retry-After": str(seconds_to_midnight(now))},
        )

    async def generating(self, user_id: str) -> int:
        row = await self.db.fetch_one(
            "SELECT COUNT(*) AS n FROM chat_generating WHERE user_id = ? AND started_at > ?",
            (user_id, self.clock() - STALE_S),
        )
        return int(row["n"]) if row else 0


class LocalLimits:
    """The same limits counted in this process alone: what chat falls back to while the database cannot
    be written (a full disk, a database outage), so chat, which writes nothing else, keeps answering; and
    each replica's own count of its callers, which says when an admission may be early (`take`)."""

    def __init__(self, concurrent: int, per_minute: int, clock: Callable[[], float]) -> None:
        self.concurrent, self.per_minute, self.clock = concurrent, per_minute, clock
        self._callers: dict[str, _Caller] = {}
        self._seen: dict[str, float] = {}

    def _refill(self, user_id: str, now: float) -> _Caller:
        if len(self._callers) > 100_000:  # forgotten callers: full allowances again
            self._callers.clear()
            self._seen.clear()
        c = self._callers.setdefault(user_id, _Caller(float(self.per_minute), 0))
        c.tokens = min(float(self.per_minute), c.tokens + (now - self._seen.get(user_id, now)) * self.per_minute / 60)
        self._seen[user_id] = now
        return c

    def take(self, user_id: str, now: float) -> _Taken:
        """Count a request of this replica's (never refused); `roomy`: it is far from either limit here."""
        c = self._refill(user_id, now)
        roomy = c.generating + 2 <= self.concurrent and c.tokens >= 2
        c.tokens = max(0.0, c.tokens - 1)
        c.generating += 1
        return _Taken(c, roomy)

    @asynccontextmanager
    async def admit(self, user_id: str, now: float) -> AsyncIterator[Slot]:
        c = self._refill(user_id, now)
        if c.generating >= self.concurrent or c.tokens < 1:
            raise TooManyRequests(
                f"too many chat requests right now (at most {self.concurrent} at once, {self.per_minute} a minute)",
                code="rate_limited",
                headers={"Retry-After": "5"},
            )
        c.tokens -= 1
        c.generating += 1
        try:
            yield Slot()
        finally:
            c.generating -= 1


@dataclass
class _Taken:
    caller: _Caller
    roomy: bool
    returned: bool = False

    def give_back(self) -> None:
        if not self.returned:
            self.returned = True
            self.caller.generating -= 1


def _cannot_write(exc: Exception) -> bool:
    """A full disk or a database outage (reported as such): limits are counted in this process meanwhile."""
    if is_disk_full(exc):
        SHORTAGES.report("disk_full", DISK_FULL)
        return True
    if isinstance(exc, DatabaseUnavailable):
        report_database_down(exc)
        return True
    return False


def _marks(values: list[str]) -> str:
    return ", ".join("?" for _ in values)


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
