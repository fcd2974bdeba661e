-- The schema of the whole companion API, as in the PostgreSQL schema (see
-- its comments): a conversation's title, labels and own retention, scoped
-- state, and the indexes the companion lists read. Existing conversations
-- keep their version (the count of their mutations, 1 or more for each,
-- every one having been created by an append); they get an empty title, no
-- labels and no retention of their own.

-- title: exact UTF-8 bytes. has_retention: 0 or 1; retention_max_idle in
-- microseconds; 0 sets no limit of its kind.
ALTER TABLE conversations ADD COLUMN title BLOB NOT NULL DEFAULT x'';
ALTER TABLE conversations ADD COLUMN has_retention INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN retention_max_idle INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN retention_max_messages INTEGER NOT NULL DEFAULT 0;

CREATE INDEX conversations_by_update ON conversations (updated_at, id);

CREATE INDEX conversations_own_retention ON conversations (id) WHERE has_retention;

CREATE TABLE conversation_labels (
    conversation_id BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    value           BLOB NOT NULL,
    PRIMARY KEY (conversation_id, key)
) WITHOUT ROWID;
CREATE INDEX conversation_labels_by_value ON conversation_labels (key, value, conversation_id);

-- values_json: the JSON object's exact UTF-8 text (see the PostgreSQL schema).
CREATE TABLE scoped_state (
    scope           TEXT    PRIMARY KEY,
    conversation_id BLOB    REFERENCES conversations (id) ON DELETE CASCADE,
    values_json     BLOB    NOT NULL,
    version         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX scoped_state_by_conversation ON scoped_state (conversation_id)
    WHERE conversation_id IS NOT NULL;

CREATE INDEX snapshots_by_creation ON snapshots (conversation_id, created_at, id);
