-- Conversations, their messages and ordering, snapshots: the same tables
-- as the PostgreSQL schema. UUIDs are 16-byte blobs, times integers of
-- microseconds since the Unix epoch, kind and body blobs (exact bytes).

CREATE TABLE conversations (
    id             BLOB    PRIMARY KEY,
    message_count  INTEGER NOT NULL DEFAULT 0,
    tail_position  INTEGER NOT NULL DEFAULT 0,
    layout_version INTEGER NOT NULL DEFAULT 0,
    version        INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE messages (
    conversation_id BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              BLOB    NOT NULL,
    role            INTEGER NOT NULL,
    kind            BLOB    NOT NULL,
    body            BLOB    NOT NULL,
    body_sha256     BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    wire_head       BLOB    NOT NULL,
    wire_tail       BLOB    NOT NULL,
    PRIMARY KEY (conversation_id, id)
);

CREATE TABLE conversation_items (
    conversation_id BLOB    NOT NULL,
    position        INTEGER NOT NULL,
    message_id      BLOB    NOT NULL,
    PRIMARY KEY (conversation_id, position),
    UNIQUE (conversation_id, message_id),
    FOREIGN KEY (conversation_id, message_id)
        REFERENCES messages (conversation_id, id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE conversation_renumberings (
    conversation_id BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    layout_version  INTEGER NOT NULL,
    lower_bound     INTEGER NOT NULL,
    upper_bound     INTEGER,
    old_positions   BLOB    NOT NULL,
    new_positions   BLOB    NOT NULL,
    PRIMARY KEY (conversation_id, layout_version)
) WITHOUT ROWID;

-- message_ids: the items, 16 bytes per id, in order (see the PostgreSQL schema).
CREATE TABLE snapshots (
    conversation_id BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    item_count      INTEGER NOT NULL,
    message_ids     BLOB    NOT NULL,
    PRIMARY KEY (conversation_id, id)
);
CREATE INDEX snapshots_by_id ON snapshots (id);

CREATE TABLE snapshot_messages (
    conversation_id BLOB    NOT NULL,
    message_id      BLOB    NOT NULL,
    role            INTEGER NOT NULL,
    kind            BLOB    NOT NULL,
    body_sha256     BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    wire_head       BLOB    NOT NULL,
    wire_tail       BLOB    NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
) WITHOUT ROWID;

CREATE TABLE snapshot_bodies (
    conversation_id BLOB NOT NULL,
    sha256          BLOB NOT NULL,
    body            BLOB NOT NULL,
    PRIMARY KEY (conversation_id, sha256)
);
