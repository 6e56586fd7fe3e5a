-- owner: purchase. Who bought (or got for free) which model, and how the payment went.
CREATE TABLE purchases (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    model               TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('free', 'test', 'stripe')),
    status              TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'refunded')),
    amount_cents        INTEGER NOT NULL,
    currency            TEXT NOT NULL,
    checkout_session_id TEXT UNIQUE,
    checkout_url        TEXT,
    payment_intent      TEXT,
    failure_reason      TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    completed_at        TEXT
);
CREATE INDEX purchases_by_user ON purchases (user_id, model, status);
CREATE INDEX purchases_by_payment_intent ON purchases (payment_intent) WHERE payment_intent IS NOT NULL;

-- owner: purchase. Its view of every model's install state, fed by install.* events
-- (event_time orders them: a late, older event never overwrites a newer state).
CREATE TABLE install_states (
    model       TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('not_installed', 'queued', 'pulling', 'installed', 'failed')),
    install_id  TEXT,
    reason      TEXT,
    will_retry  INTEGER NOT NULL DEFAULT 0,
    retry_in_s  REAL,
    event_time  TEXT NOT NULL
);
