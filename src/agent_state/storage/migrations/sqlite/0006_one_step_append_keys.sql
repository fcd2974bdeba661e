-- As in the PostgreSQL schema: the message count of a keyed append's
-- response kept without its metadata (NULL: the response is whole).
ALTER TABLE idempotency_keys ADD COLUMN message_count INTEGER;
