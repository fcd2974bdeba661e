-- A keyed append may keep its key in the same statement as its messages:
-- its response is then stored without its metadata, and this column holds
-- the message count that metadata reports (NULL: the response is whole).
ALTER TABLE idempotency_keys ADD COLUMN message_count bigint;
