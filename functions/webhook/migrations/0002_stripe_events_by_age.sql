-- owner: webhook. Processed Stripe event ids are pruned by age (STUDIO_OUTBOX_KEEP_DAYS).
CREATE INDEX stripe_events_by_received_at ON stripe_events (received_at);
