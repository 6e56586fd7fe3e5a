-- owner: webhook. Every verified Stripe event, once: a redelivery finds its id here and changes nothing.
CREATE TABLE stripe_events (
    event_id    TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    object_id   TEXT,
    livemode    INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT NOT NULL,
    received_at TEXT NOT NULL
);
