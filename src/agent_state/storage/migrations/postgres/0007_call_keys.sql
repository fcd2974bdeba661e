-- Idempotency keys of calls whose record cannot live with one existing
-- conversation, as idempotency_keys' do: DeleteConversation (its
-- conversation goes), UpdateState (a scope's state), and CreateConversation
-- and ForkConversation when the server makes the new conversation's id.
-- Keyed by what the call was about (its subject). `conversation_id`, where
-- set, is the conversation whose erasure takes the key with it: the
-- response shows what that conversation held.
CREATE TABLE call_keys (
    subject         text        NOT NULL,
    key             text        NOT NULL,
    conversation_id uuid        REFERENCES conversations (id) ON DELETE CASCADE,
    fingerprint     bytea       NOT NULL,
    response        bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (subject, key)
);

-- For the sweep of expired keys, and for the erasure of a conversation.
CREATE INDEX call_keys_created_at ON call_keys (created_at);
CREATE INDEX call_keys_conversation_id ON call_keys (conversation_id)
    WHERE conversation_id IS NOT NULL;
