-- Suspensions (a disputed payment) and restorations (a dispute won, a refund that failed) make
-- ownership go both ways, so each row remembers the time of the purchase event that last set it:
-- an older event delivered late never overwrites a newer state.
ALTER TABLE chat_ownership ADD COLUMN event_time TEXT;
