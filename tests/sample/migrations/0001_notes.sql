-- owner: the sample function used by runtime and gateway tests.
CREATE TABLE sample_notes (
    n          INTEGER PRIMARY KEY,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE sample_seen (
    n          INTEGER PRIMARY KEY,
    attempts   INTEGER NOT NULL DEFAULT 1
);
