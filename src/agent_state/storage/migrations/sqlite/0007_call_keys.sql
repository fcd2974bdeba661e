-- Idempotency keys of calls whose record cannot live with one existing
-- conversation, as in the PostgreSQL schema.
CREATE TABLE call_keys (
    subject         TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    conversation_id BLOB    REFERENCES conversations (id) ON DELETE CASCADE,
    fingerprint     BLOB    NOT NULL,
    response        BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (subject, key)
) WITHOUT ROWID;

CREATE INDEX call_keys_created_at ON call_keys (created_at);
CREATE INDEX call_keys_conversation_id ON call_keys (conversation_id)
    WHERE conversation_id IS NOT NULL;
