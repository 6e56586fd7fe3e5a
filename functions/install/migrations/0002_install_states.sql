-- owner: install. The installs table becomes the one record of install state the studio answers from:
-- 'queued' (an install was asked for, not started yet) joins the states, and a failure keeps whether and
-- when it will be retried. (purchase's copy, install_states, is dropped by purchase's 0002.)
CREATE TABLE installs_v2 (
    model        TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'pulling', 'installed', 'failed', 'removed')),
    install_id   TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    digest       TEXT,
    size_bytes   INTEGER,
    reason       TEXT,
    will_retry   INTEGER NOT NULL DEFAULT 0,
    retry_in_s   REAL,
    lease_owner  TEXT,
    lease_until  REAL,
    updated_at   TEXT NOT NULL
);
INSERT INTO installs_v2 (model, state, install_id, attempt, digest, size_bytes, reason, lease_owner, lease_until, updated_at)
    SELECT model, state, install_id, attempt, digest, size_bytes, reason, lease_owner, lease_until, updated_at FROM installs;
DROP TABLE installs;
ALTER TABLE installs_v2 RENAME TO installs;
