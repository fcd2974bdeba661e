-- Each message row holds its place in the ordering and its whole encoding,
-- so that a page is one range scan of one index over one table, sending
-- stored bytes as they are (no lookup per entry, no concatenation per row).
--
-- position: NULL while detached (see SEMANTICS.md). The unique index allows
-- any number of NULLs.
-- entry: the message as an entry of a list response (what was wire_head ||
-- body || wire_tail); the body is the slice body_offset, body_length of it.
-- Rows are copied in ordering order, so an old conversation's pages read
-- neighbouring heap pages, as a new one's do.
CREATE TABLE messages_framed (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    position        bigint,
    role            smallint    NOT NULL,
    kind            bytea       NOT NULL,
    entry           bytea       NOT NULL,
    body_offset     integer     NOT NULL,
    body_length     integer     NOT NULL,
    body_sha256     bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, id)
);

INSERT INTO messages_framed (conversation_id, id, position, role, kind, entry, body_offset,
    body_length, body_sha256, created_at)
SELECT m.conversation_id, m.id, i.position, m.role, m.kind, m.wire_head || m.body || m.wire_tail,
    octet_length(m.wire_head), octet_length(m.body), m.body_sha256, m.created_at
FROM messages m
LEFT JOIN conversation_items i ON i.conversation_id = m.conversation_id AND i.message_id = m.id
ORDER BY m.conversation_id, i.position;

DROP TABLE conversation_items;
DROP TABLE messages;
ALTER TABLE messages_framed RENAME TO messages;
ALTER INDEX messages_framed_pkey RENAME TO messages_pkey;
ALTER TABLE messages
    RENAME CONSTRAINT messages_framed_conversation_id_fkey TO messages_conversation_id_fkey;

-- The ordering; id included so that id pages and range lookups read the
-- index alone.
CREATE UNIQUE INDEX messages_ordering ON messages (conversation_id, position) INCLUDE (id);

-- The largest entry ever stored in the conversation (never lowered): when a
-- whole page of that size fits the byte budget, a page skips summing it.
ALTER TABLE conversations ADD COLUMN largest_entry integer NOT NULL DEFAULT 0;
UPDATE conversations c SET largest_entry = sizes.largest
FROM (
    SELECT conversation_id, max(octet_length(entry)) AS largest
    FROM messages GROUP BY conversation_id
) AS sizes
WHERE c.id = sizes.conversation_id;

ANALYZE messages;
