-- Each message row holds its place in the ordering and its whole encoding,
-- as in the PostgreSQL schema: a page is one range scan of one index, each
-- row's stored bytes read as they are. position is NULL while detached (a
-- unique index allows any number of NULLs); the body is the slice
-- body_offset, body_length of entry. || concatenates text: the blobs pass
-- through it and back (CAST) byte for byte, the text encoding being UTF-8.
CREATE TABLE messages_framed (
    conversation_id BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              BLOB    NOT NULL,
    position        INTEGER,
    role            INTEGER NOT NULL,
    kind            BLOB    NOT NULL,
    entry           BLOB    NOT NULL,
    body_offset     INTEGER NOT NULL,
    body_length     INTEGER NOT NULL,
    body_sha256     BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, id)
);

INSERT INTO messages_framed (conversation_id, id, position, role, kind, entry, body_offset,
    body_length, body_sha256, created_at)
SELECT m.conversation_id, m.id, i.position, m.role, m.kind,
    CAST(m.wire_head || m.body || m.wire_tail AS BLOB), length(m.wire_head), length(m.body),
    m.body_sha256, m.created_at
FROM messages m
LEFT JOIN conversation_items i ON i.conversation_id = m.conversation_id AND i.message_id = m.id
ORDER BY m.conversation_id, i.position;

DROP TABLE conversation_items;
DROP TABLE messages;
ALTER TABLE messages_framed RENAME TO messages;

-- The ordering.
CREATE UNIQUE INDEX messages_ordering ON messages (conversation_id, position);
