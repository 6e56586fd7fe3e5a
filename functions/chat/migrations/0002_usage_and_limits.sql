-- owner: the chat function. Portable SQL (SQLite and PostgreSQL).
-- Tokens used per account (or visitor) per model per UTC day: the account page's chart, the daily limit.
CREATE TABLE chat_usage (
    user_id           TEXT NOT NULL,
    model             TEXT NOT NULL,
    day               TEXT NOT NULL,  -- YYYY-MM-DD, UTC
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    answers           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, model, day)
);

-- The per-minute allowance of each caller, shared by every chat replica: a token bucket.
CREATE TABLE chat_allowances (
    user_id    TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at REAL NOT NULL  -- seconds since the epoch
);

-- Answers being generated now, over every replica (a replica that dies leaves rows that go stale).
CREATE TABLE chat_generating (
    answer_id  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE INDEX chat_generating_by_user ON chat_generating (user_id, started_at);
