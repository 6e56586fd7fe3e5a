"""The differences between SQLite and PostgreSQL, all in one place.

The studio's SQL is written once, portably (`?` placeholders, `ON CONFLICT ... DO UPDATE`, TEXT ISO
timestamps, INTEGER flags); what the two engines still spell differently is translated here:

- `STUDIO_DATABASE_URL`: empty (SQLite at STUDIO_DATA_DIR/studio.db, as always), `sqlite:///rel/path.db`
  (relative to the working directory), `sqlite:////abs/path.db`, or `postgresql://user:pass@host:port/db`.
- placeholders: `?` becomes `$1..$n` for PostgreSQL, skipping `?` inside quoted strings, quoted
  names and comments; translated once per distinct statement (cached).
- migrations (DDL only): SQLite's 64-bit INTEGER is PostgreSQL's BIGINT (model sizes pass 2 GiB),
  REAL (8 bytes in SQLite) is DOUBLE PRECISION (PostgreSQL's REAL is 4 bytes: epoch seconds would lose
  whole minutes), BLOB is BYTEA, and `INTEGER PRIMARY KEY AUTOINCREMENT` is an identity column.
- one writer: SQLite serialises write transactions with `BEGIN IMMEDIATE`; the functions' read-then-
  write steps (install leases, chat allowances, the purchase ledger) were written against that. On
  PostgreSQL every write transaction takes the same transaction-level advisory lock first, so they
  keep that guarantee across every process and server sharing the database; reads never wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

SQLITE = "sqlite"
POSTGRES = "postgresql"

# pg_advisory_xact_lock's key for "the studio's writer" (any constant; "studio" in ASCII).
WRITER_LOCK_KEY = 0x73747564696F
WRITER_LOCK_SQL = f"SELECT pg_advisory_xact_lock({WRITER_LOCK_KEY})"


class DatabaseUrlError(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseUrl:
    """Where the database is: a SQLite file or a PostgreSQL server (the password never shows in repr)."""

    url: str

    @classmethod
    def parse(cls, raw: str) -> DatabaseUrl:
        raw = raw.strip()
        scheme = raw.partition("://")[0].lower()
        if scheme == SQLITE:
            if not raw[len("sqlite://") :].startswith("/") or raw.rstrip("/") == "sqlite:":
                raise DatabaseUrlError("a SQLite URL is sqlite:///relative/file.db or sqlite:////absolute/file.db")
            if len(raw) <= len("sqlite:///"):
                raise DatabaseUrlError("the SQLite URL names no file: sqlite:///studio.db")
            return cls(raw)
        if scheme in ("postgresql", "postgres"):
            parts = urlsplit(raw)
            if not parts.hostname and "host=" not in parts.query:
                raise DatabaseUrlError("a PostgreSQL URL names its server: postgresql://user:pass@host:5432/db")
            if not parts.path.strip("/"):
                raise DatabaseUrlError("the PostgreSQL URL names no database: postgresql://user:pass@host:5432/db")
            return cls(raw)
        raise DatabaseUrlError("expected sqlite:///studio.db or postgresql://user:pass@host:5432/db")

    @property
    def dialect(self) -> str:
        return SQLITE if self.url.lower().startswith("sqlite:") else POSTGRES

    @property
    def is_postgres(self) -> bool:
        return self.dialect == POSTGRES

    def sqlite_path(self, base: Path) -> Path:
        """The SQLite file: `sqlite:///rel/name.db` relative to `base`, `sqlite:////abs/name.db` as given."""
        rest = unquote(self.url[len("sqlite:///") :])
        path = Path(rest)
        return path if path.is_absolute() else base / path

    @property
    def database_name(self) -> str:
        return unquote(urlsplit(self.url).path.strip("/"))

    def with_database(self, name: str) -> DatabaseUrl:
        parts = urlsplit(self.url)
        return DatabaseUrl(urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment)))

    def masked(self) -> str:
        """The URL as logs and error messages may show it: no password."""
        if self.dialect == SQLITE:
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked()!r})"

    def __str__(self) -> str:
        return self.masked()


# -- statements ------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1..$n`; a `?` in a string, quoted name or comment stays."""
    if "?" not in sql:
        return sql
    out: list[str] = []
    n = 0
    i, end = 0, len(sql)
    while i < end:
        c = sql[i]
        if c in ("'", '"'):
            close = sql.find(c, i + 1)
            while close != -1 and close + 1 < end and sql[close + 1] == c:  # '' and "" are escapes
                close = sql.find(c, close + 2)
            j = end if close == -1 else close + 1
            out.append(sql[i:j])
            i = j
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = end if j == -1 else j
            out.append(sql[i:j])
            i = j
        elif c == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = end if j == -1 else j + 2
            out.append(sql[i:j])
            i = j
        elif c == "?":
            n += 1
            out.append(f"${n}")
            i += 1
        else:
            j = i + 1
            while j < end and sql[j] not in "'\"-/?":
                j += 1
            out.append(sql[i:j])
            i = j
    return "".join(out)


_DDL = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)


def postgres_ddl(script: str) -> str:
    """A migration written for SQLite, in PostgreSQL's type names (the same schema, the same meaning)."""
    for pattern, replacement in _DDL:
        script = pattern.sub(replacement, script)
    return script


def rowcount(status: str) -> int:
    """Rows changed, from PostgreSQL's command tag (`UPDATE 3`, `INSERT 0 1`, `DELETE 0`)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
