-- Idempotency keys of mutating calls, as in the PostgreSQL schema.
CREATE TABLE idempotency_keys (
    conversation_id BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    key             TEXT    NOT NULL,
    fingerprint     BLOB    NOT NULL,
    response        BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
