-- owner: the runtime. Which relay (one per studio process) is publishing a row, and until when: with
-- several studios on one database each row is published by one of them (studio.runtime.outbox).
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until TEXT;
