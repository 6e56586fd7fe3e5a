-- owner: purchase (the marketplace). The operator's changes to the catalog, laid over the
-- STUDIO_CATALOG seed by every process: one row per changed model with its whole new entry
-- (JSON), or NULL when the operator removed it.
CREATE TABLE catalog_changes (
    model      TEXT PRIMARY KEY,
    entry      TEXT,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL
);
