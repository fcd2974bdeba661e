-- Conversations, their messages and ordering, snapshots.
-- Every table leads with conversation_id so that rows of one conversation
-- can later be co-located (distributed PostgreSQL keyed by conversation).

CREATE TABLE conversations (
    id             uuid        PRIMARY KEY,
    message_count  bigint      NOT NULL DEFAULT 0,
    -- Highest position ever handed out in this conversation.
    tail_position  bigint      NOT NULL DEFAULT 0,
    -- Number of renumberings so far (see conversation_renumberings).
    layout_version bigint      NOT NULL DEFAULT 0,
    -- Number of successful mutations (appends, replaces, deletes).
    version        bigint      NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- Messages are immutable. kind and body are bytea: text columns cannot
-- hold U+0000, and the API round-trips every string exactly.
CREATE TABLE messages (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    role            smallint    NOT NULL,
    kind            bytea       NOT NULL,
    -- Deterministic protobuf encoding of MessageBody.
    body            bytea       NOT NULL,
    body_sha256     bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    -- The message's protobuf encoding around the body, computed once at
    -- append: wire_head || body || wire_tail is the message as an entry of
    -- a list response, so lists send stored bytes without re-encoding.
    wire_head       bytea       NOT NULL,
    wire_tail       bytea       NOT NULL,
    PRIMARY KEY (conversation_id, id)
);

-- The ordering: one row per message in it, read in position order.
-- Positions are sparse, so inserts rarely touch other rows.
CREATE TABLE conversation_items (
    conversation_id uuid   NOT NULL,
    position        bigint NOT NULL,
    message_id      uuid   NOT NULL,
    PRIMARY KEY (conversation_id, position),
    UNIQUE (conversation_id, message_id),
    FOREIGN KEY (conversation_id, message_id)
        REFERENCES messages (conversation_id, id) ON DELETE CASCADE
);

-- Each renumbering of a window of positions, so that page tokens issued
-- before it still resume at the right place.
CREATE TABLE conversation_renumberings (
    conversation_id uuid   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    layout_version  bigint NOT NULL,
    lower_bound     bigint NOT NULL,
    upper_bound     bigint,
    -- Big-endian int64 arrays of equal length, old ascending.
    old_positions   bytea  NOT NULL,
    new_positions   bytea  NOT NULL,
    PRIMARY KEY (conversation_id, layout_version)
);

-- A snapshot's items are its message ids in order, packed as 16 bytes each
-- in one value: creating a snapshot writes one row whatever its size, and
-- storage costs 16 bytes per item. EXTERNAL storage (no compression) lets
-- a page read only its slice of a long list.
CREATE TABLE snapshots (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    created_at      timestamptz NOT NULL,
    item_count      integer     NOT NULL,
    message_ids     bytea       NOT NULL,
    PRIMARY KEY (conversation_id, id)
);
ALTER TABLE snapshots ALTER COLUMN message_ids SET STORAGE EXTERNAL;
CREATE INDEX snapshots_by_id ON snapshots (id);

-- Frozen copy of each message that some snapshot names. Messages are
-- immutable, so one copy serves every snapshot, and it outlives the
-- message's deletion.
CREATE TABLE snapshot_messages (
    conversation_id uuid        NOT NULL,
    message_id      uuid        NOT NULL,
    role            smallint    NOT NULL,
    kind            bytea       NOT NULL,
    body_sha256     bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    wire_head       bytea       NOT NULL,
    wire_tail       bytea       NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
);

-- Each distinct body once per conversation, keyed by its SHA-256.
CREATE TABLE snapshot_bodies (
    conversation_id uuid  NOT NULL,
    sha256          bytea NOT NULL,
    body            bytea NOT NULL,
    PRIMARY KEY (conversation_id, sha256)
);
