"""What backup and restore of either database share (studio.app.ops for SQLite, studio.app.ops_postgres for
PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass, field


class OpsError(RuntimeError):
    """A backup or restore cannot go on; the message says what is wrong and what to do."""


@dataclass
class DatabaseReport:
    integrity: str
    tables: dict[str, int]
    migrations: list[str] = field(default_factory=list)
