-- Idempotency keys of mutating calls: the request's fingerprint and the
-- response to replay. Keyed by conversation like everything else, so a key
-- lives with the conversation it changed.
CREATE TABLE idempotency_keys (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    key             text        NOT NULL,
    fingerprint     bytea       NOT NULL,
    response        bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, key)
);

-- For the sweep of expired keys.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
