-- owner: the accounts function. People, their sessions and personal API keys. Portable SQL (SQLite and
-- PostgreSQL): TEXT ids, ISO-8601 UTC timestamps as TEXT, INTEGER flags.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,          -- normalised: trimmed, lower case
    password_hash TEXT NOT NULL,                 -- Argon2id (argon2-cffi), never the password
    role          TEXT NOT NULL DEFAULT 'user',  -- user | operator
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- A signed-in browser: the cookie holds a random id, this table only its SHA-256.
CREATE TABLE account_sessions (
    id_hash      TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE INDEX account_sessions_by_account ON account_sessions (account_id);

-- Personal API keys (`sk-studio-...`): shown once, stored as a SHA-256; revoked keys stay as tombstones.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_keys_by_account ON api_keys (account_id);

-- Failed sign-ins, per e-mail and per client address, for the brute-force limit (pruned as they age).
CREATE TABLE login_failures (
    subject   TEXT NOT NULL,  -- email:<normalised e-mail> | addr:<client address>
    failed_at TEXT NOT NULL
);
CREATE INDEX login_failures_by_subject ON login_failures (subject, failed_at);

-- One-time password reset links (`localai-studio users reset-link`): the token's SHA-256, an hour's life.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
