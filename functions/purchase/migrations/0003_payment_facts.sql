-- owner: purchase. What Stripe said about a payment besides "paid", kept by payment intent whether or
-- not a purchase is confirmed with it yet: a full refund or a dispute that arrives before
-- checkout.session.completed is still there when the confirmation comes, so arrival order never
-- changes the end state (refund wins, a lost dispute revokes, an open one suspends).
-- `*_at` is the Stripe event's `created` (seconds): a later fact outranks an earlier one.
CREATE TABLE payment_facts (
    payment_intent TEXT PRIMARY KEY,
    refund         TEXT CHECK (refund IN ('full', 'failed')),
    refund_at      INTEGER NOT NULL DEFAULT 0,
    dispute        TEXT CHECK (dispute IN ('open', 'won', 'lost')),
    dispute_id     TEXT,
    dispute_at     INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL
);

-- A paid purchase whose payment is disputed: owned on paper, no access until the dispute closes.
ALTER TABLE purchases ADD COLUMN suspended_at TEXT;

-- Why the operator should look at a purchase (its install failed for good because the disk is full:
-- free space and retry, or refund it); NULL = nothing to look at.
ALTER TABLE purchases ADD COLUMN flag TEXT;

-- The buyer's e-mail as Stripe Checkout collected it (customer_details.email): the operator searches
-- purchases by it. NULL for free and test purchases.
ALTER TABLE purchases ADD COLUMN email TEXT;
