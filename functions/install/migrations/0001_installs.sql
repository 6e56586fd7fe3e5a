-- owner: install. Each catalog model's install in Ollama; a lease says which replica is pulling it.
CREATE TABLE installs (
    model        TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('pulling', 'installed', 'failed', 'removed')),
    install_id   TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    digest       TEXT,
    size_bytes   INTEGER,
    reason       TEXT,
    lease_owner  TEXT,
    lease_until  REAL,
    updated_at   TEXT NOT NULL
);
