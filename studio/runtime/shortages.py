"""Shortages of disk and open files: recognised, logged at most once a minute with a count, announced.

A full disk or an exhausted file table fails every request the same way; one traceback a request
would fill the log (on a disk that is already full) and bury the cause. So each kind of shortage is
counted, logged at error level the first time and then at most once a `interval_s` with how often it
happened meanwhile, and announced to listeners (the host publishes `resource.exhausted`, which the
monitor turns into an alert). `recovered(kind)` ends it with one info line and `resource.recovered`.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("studio.resources")

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
OUT_OF_FILES_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
_SQLITE_FULL = 13
_JETSTREAM_INSUFFICIENT_STORAGE = 10047

Listener = Callable[[str, str, int | None], None]  # kind, message, count (None: recovered)


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL, PostgreSQL's disk_full (SQLSTATE 53100), ENOSPC/EDQUOT from the OS, or
    JetStream's 'insufficient storage'."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the cause may be wrapped
        seen.add(id(current))
        if isinstance(current, sqlite3.Error) and (getattr(current, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == "53100":  # asyncpg's PostgresError
            return True
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if getattr(current, "err_code", None) == _JETSTREAM_INSUFFICIENT_STORAGE:
            return True
        current = current.__cause__ or current.__context__
    return False


def is_out_of_files(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in OUT_OF_FILES_ERRNOS


@dataclass
class _Shortage:
    count: int = 0  # since it was last logged
    total: int = 0
    last_logged: float | None = None


class Shortages:
    def __init__(self, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._active: dict[str, _Shortage] = {}
        self.listeners: list[Listener] = []

    def report(self, kind: str, message: str) -> None:
        shortage = self._active.setdefault(kind, _Shortage())
        shortage.count += 1
        shortage.total += 1
        now = self._clock()
        if shortage.last_logged is not None and now - shortage.last_logged < self.interval_s:
            return
        log.error(message, extra={"shortage": kind, "count": shortage.count, "total": shortage.total})
        for listener in self.listeners:
            listener(kind, message, shortage.count)
        shortage.count, shortage.last_logged = 0, now

    def recovered(self, kind: str, message: str) -> None:
        if self._active.pop(kind, None) is None:
            return
        log.info(message, extra={"shortage": kind})
        for listener in self.listeners:
            listener(kind, message, None)

    def active(self) -> dict[str, int]:
        """Each current shortage and how often it happened in all."""
        return {kind: s.total for kind, s in self._active.items()}


SHORTAGES = Shortages()  # one per process: every part of it reports to the same counts
