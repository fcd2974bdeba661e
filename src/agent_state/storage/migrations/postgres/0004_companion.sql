-- The schema of the whole companion API (agentstate.v1.ConversationsService):
-- a conversation's title, labels and own retention, state scoped to an app,
-- a user or a conversation, and the indexes its lists read.
--
-- Existing conversations keep their version: the count of their successful
-- mutations (appends, replaces, deletes of a range), so 1 or more for every
-- conversation, each having been created by an append. From here on every
-- change adds 1 (UpdateConversation too) and CreateConversation starts a
-- conversation at 1. Existing conversations get an empty title, no labels
-- and no retention of their own (the server's default applies).

-- title: the exact UTF-8 bytes (bytea, like kind: text cannot hold U+0000).
-- has_retention: whether the conversation has a Retention of its own, which
-- replaces the server's default whole; then retention_max_idle
-- (microseconds) and retention_max_messages, 0 setting no limit of its kind.
-- Constant defaults: adding the columns rewrites no row.
ALTER TABLE conversations
    ADD COLUMN title                  bytea   NOT NULL DEFAULT '',
    ADD COLUMN has_retention          boolean NOT NULL DEFAULT false,
    ADD COLUMN retention_max_idle     bigint  NOT NULL DEFAULT 0,
    ADD COLUMN retention_max_messages bigint  NOT NULL DEFAULT 0;

-- ListConversations' order: a page is a range scan between two keys
-- (updated_at, id), in either direction. The retention sweeper finds idle
-- conversations through it too.
CREATE INDEX conversations_by_update ON conversations (updated_at, id);

-- The few conversations with a retention of their own, for the sweeper.
CREATE INDEX conversations_own_retention ON conversations (id) WHERE has_retention;

-- Labels: one row per key; the value is the exact UTF-8 bytes, as title.
CREATE TABLE conversation_labels (
    conversation_id uuid  NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    key             text  NOT NULL,
    value           bytea NOT NULL,
    PRIMARY KEY (conversation_id, key)
);
-- The conversations carrying a label, read from the index alone.
CREATE INDEX conversation_labels_by_value ON conversation_labels (key, value, conversation_id);

-- State scoped to `app/{app}`, `user/{app}/{user}` or `conversation/{uuid}`
-- (conversation_id set for the last, so the state goes with the
-- conversation). values_json holds the JSON object's exact UTF-8 text in
-- the service's canonical serialisation: bytea, not jsonb, which would
-- change numbers and the order of keys. version: +1 on every update.
CREATE TABLE scoped_state (
    scope           text   PRIMARY KEY,
    conversation_id uuid   REFERENCES conversations (id) ON DELETE CASCADE,
    values_json     bytea  NOT NULL,
    version         bigint NOT NULL
);
CREATE INDEX scoped_state_by_conversation ON scoped_state (conversation_id)
    WHERE conversation_id IS NOT NULL;

-- ListConversationSnapshots' keyset order.
CREATE INDEX snapshots_by_creation ON snapshots (conversation_id, created_at, id);

ANALYZE conversations;
