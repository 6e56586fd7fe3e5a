-- owner: install. A model's install on each Ollama node of a fleet (STUDIO_OLLAMA_URLS), and the pull lease per
-- (model, node): one replica of any studio pulls a model onto a node at a time. `installs` stays what buyers see
-- (installed once the model is on at least one node).
CREATE TABLE install_nodes (
    model        TEXT NOT NULL,
    node         TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pulling', 'installed', 'failed', 'removed')),
    install_id   TEXT NOT NULL,
    digest       TEXT,
    size_bytes   BIGINT,
    reason       TEXT,
    lease_owner  TEXT,
    lease_until  DOUBLE PRECISION,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (model, node)
);
