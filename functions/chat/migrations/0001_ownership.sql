-- owner: the chat function. Who owns which model, projected from purchase.completed and
-- purchase.revoked. One row per purchase; a revoked purchase stays as a tombstone (revoked = 1) so a
-- late or redelivered purchase.completed cannot bring it back.
CREATE TABLE chat_ownership (
    purchase_id TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    model       TEXT NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL
);
CREATE INDEX chat_ownership_by_owner ON chat_ownership (user_id, model) WHERE revoked = 0;
