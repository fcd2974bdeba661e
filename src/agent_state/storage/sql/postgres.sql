-- The PostgreSQL queries of the storage layer, loaded once by sql/__init__.py.
--
-- sqlite.sql holds the same names in the same order, so the two files read
-- side by side; what only this dialect needs comes after the line
-- "-- only in this dialect". Parameters are named: %(name)s here, :name
-- there, with the same names in both.
--
-- Joins that look rows up one by one are written as LATERAL subqueries with
-- OFFSET 0, which the planner cannot flatten into a join of its choosing.
-- A lookup of messages by id names its conversation through a scalar
-- subquery, (SELECT %(conversation)s::uuid): the planner then estimates an
-- average conversation. Given the id as a constant, it looks it up in the
-- statistics, and a conversation younger than the last ANALYZE of
-- messages may look empty there (in a small database, every conversation
-- is on the list of most common values, and one not on it has no rows);
-- scanning such a conversation in messages_ordering, which includes id,
-- then costs as little as a probe of the primary key, and the planner
-- scanned the whole conversation once per id
-- (tests/storage/test_lookup_plans.py).
--
-- A statement over many rows takes one array per column, under the name
-- sqlite.sql binds one value of per row (executemany there). Lists of ids
-- that a query reads travel as one bytea of 16-byte ids and are unpacked in
-- the query: adapting a uuid[] parameter costs psycopg more than the query.


-- Transactions ---------------------------------------------------------------

-- name: begin_write
BEGIN

-- name: begin_read
-- One snapshot for the whole read, so a page and its metadata agree.
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY

-- name: commit
COMMIT

-- name: rollback
ROLLBACK


-- Conversations ----------------------------------------------------------------

-- name: create_conversation
-- An empty conversation, unless it exists; a row when this made it. A
-- concurrent creator makes this wait for its outcome; either way the row
-- then exists. Its times are placeholders: the transaction's save gives
-- it its first updated_at as created_at (save_conversation, save_record).
INSERT INTO conversations
    (id, message_count, tail_position, layout_version, version, created_at, updated_at)
VALUES (%(conversation)s, 0, 0, 0, 0, to_timestamp(0), to_timestamp(0))
ON CONFLICT (id) DO NOTHING
RETURNING version

-- name: lock_conversation
-- The row a write transaction works on, locked until it ends. FOR NO KEY
-- UPDATE (the lock an UPDATE of the row takes) excludes the other writers,
-- forks and erasers of the conversation, but not hold_conversations' FOR
-- KEY SHARE: a writer of A that holds B's row for the scope conversation/B
-- does not wait for B's writer, so two appends with state that each name
-- the other's conversation cannot deadlock.
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = %(conversation)s FOR NO KEY UPDATE

-- name: conversation
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = %(conversation)s

-- name: save_conversation
-- A row at version 0 was created by this transaction (create_conversation)
-- and gets its first change now: its created_at becomes that change's
-- updated_at, as append_at_tail gives a conversation it creates.
UPDATE conversations
SET message_count = %(count)s, updated_at = %(updated_at)s, tail_position = %(tail)s,
    layout_version = %(layout)s, version = %(version)s,
    created_at = CASE WHEN version = 0 THEN %(updated_at)s ELSE created_at END
WHERE id = %(conversation)s

-- name: append_at_tail
-- A whole common append in one statement, one implicit transaction: the
-- conversation row is created (created_at: its first updated_at), or
-- locked with its counters moved, only when the condition holds; the
-- RETURNING row gates and positions the inserts (no row: nothing is
-- written). The INSERT creates an absent
-- conversation when no version is required or version 0 is (absent); the
-- UPDATE moves an existing one at the required version, if any. The two
-- see the same snapshot, so at most one of them acts; the UPDATE, if it
-- waited for another writer, checks its condition again on the row that
-- writer left. A conversation created by another writer since this
-- statement began is seen by neither: no row, and the caller takes the
-- locked path. A keyed append keeps its key in the same step (kept), and
-- a key the conversation already has (recent or expired) leaves the
-- statement without a row, so the caller takes the locked path, which
-- replays or replaces it: a committed key stops the UPDATE, and one a
-- concurrent duplicate kept since this statement began fails it on the
-- key's primary key, with nothing written (the store then returns None
-- too). The key is inserted after the row lock is taken, as the locked
-- path does, so the two never wait on each other in opposite orders.
WITH created AS (
    INSERT INTO conversations
        (id, message_count, tail_position, layout_version, version, created_at, updated_at,
         largest_entry)
    SELECT %(conversation)s, %(count)s, %(count)s * %(gap)s, 0, 1, %(updated_at)s, %(updated_at)s,
        %(largest)s
    WHERE coalesce(%(if_version)s::bigint, 0) = 0
    ON CONFLICT (id) DO NOTHING
    RETURNING message_count, updated_at, tail_position, layout_version, version
), moved AS (
    UPDATE conversations AS c
    SET message_count = c.message_count + %(count)s,
        tail_position = c.tail_position + %(count)s * %(gap)s,
        version = c.version + 1,
        updated_at = %(updated_at)s,
        largest_entry = greatest(c.largest_entry, %(largest)s)
    WHERE c.id = %(conversation)s
        AND (%(if_version)s::bigint IS NULL OR c.version = %(if_version)s::bigint)
        AND c.updated_at < %(updated_at)s
        AND c.tail_position <= %(max_position)s - %(count)s * %(gap)s
        AND NOT EXISTS (
            SELECT FROM idempotency_keys AS k
            WHERE k.conversation_id = %(conversation)s AND k.key = %(key)s::text
        )
    RETURNING message_count, updated_at, tail_position, layout_version, version
), conversation AS (
    SELECT * FROM created UNION ALL SELECT * FROM moved
), inserted AS (
    -- The n-th of the messages goes n gaps past the old tail.
    INSERT INTO messages (conversation_id, id, position, role, kind, entry, body_offset,
        body_length, body_sha256, created_at)
    SELECT %(conversation)s, new.id, c.tail_position - %(gap)s * (%(count)s - new.n),
        new.role, new.kind, new.entry, new.body_offset, new.body_length, new.digest,
        new.created_at
    FROM conversation AS c, unnest(
        %(id)s::uuid[], %(role)s::smallint[], %(kind)s::bytea[], %(entry)s::bytea[],
        %(body_offset)s::integer[], %(body_length)s::integer[], %(digest)s::bytea[],
        %(created_at)s::timestamptz[]
    ) WITH ORDINALITY
        AS new(id, role, kind, entry, body_offset, body_length, digest, created_at, n)
), kept AS (
    INSERT INTO idempotency_keys
        (conversation_id, key, fingerprint, response, created_at, message_count)
    SELECT %(conversation)s, %(key)s, %(fingerprint)s, %(response)s, %(updated_at)s,
        c.message_count
    FROM conversation AS c
    WHERE %(key)s::text IS NOT NULL
)
SELECT * FROM conversation


-- Messages and the ordering ------------------------------------------------------

-- name: lookup
-- Of the named ids, the messages of the conversation, with their position
-- (NULL when detached).
SELECT m.id, m.position
FROM (
    SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid AS id
    FROM generate_series(1, length(%(packed)s) / 16) AS n
) AS wanted
CROSS JOIN LATERAL (
    SELECT id, position FROM messages
    WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = wanted.id
    OFFSET 0
) AS m

-- name: items_between
SELECT position, id FROM messages
WHERE conversation_id = %(conversation)s AND position >= %(lower)s AND position <= %(upper)s
ORDER BY position

-- name: items_from
SELECT position, id FROM messages
WHERE conversation_id = %(conversation)s AND position >= %(lower)s
ORDER BY position

-- name: items_before
SELECT position, id FROM messages
WHERE conversation_id = %(conversation)s AND position < %(position)s
ORDER BY position DESC LIMIT %(limit)s

-- name: items_after
-- Also the page of ListConversationMessageIds.
SELECT position, id FROM messages
WHERE conversation_id = %(conversation)s AND position > %(position)s
ORDER BY position LIMIT %(limit)s

-- name: insert_messages
-- New messages at their positions (NULL: detached), the conversation's
-- largest entry kept up to date (it is locked by the write transaction).
WITH inserted AS (
    INSERT INTO messages (conversation_id, id, position, role, kind, entry, body_offset,
        body_length, body_sha256, created_at)
    SELECT %(conversation)s, * FROM unnest(
        %(id)s::uuid[], %(position)s::bigint[], %(role)s::smallint[], %(kind)s::bytea[],
        %(entry)s::bytea[], %(body_offset)s::integer[], %(body_length)s::integer[],
        %(digest)s::bytea[], %(created_at)s::timestamptz[])
)
UPDATE conversations SET largest_entry = greatest(largest_entry, %(largest)s)
WHERE id = %(conversation)s

-- name: place
UPDATE messages AS m SET position = placed.position
FROM unnest(%(position)s::bigint[], %(placed)s::uuid[]) AS placed(position, id)
WHERE m.conversation_id = (SELECT %(conversation)s::uuid) AND m.id = placed.id

-- name: unplace
UPDATE messages SET position = NULL
WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = ANY(%(id)s::uuid[])

-- name: delete_messages
DELETE FROM messages WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = ANY(%(id)s::uuid[])

-- Renumberings -------------------------------------------------------------------

-- name: park_renumbered
-- First step of a renumbering: each moved row goes to its parked position
-- (see common.parked_moves).
UPDATE messages AS m SET position = move.parked
FROM unnest(%(old_position)s::bigint[], %(parked)s::bigint[]) AS move(old_position, parked)
WHERE m.conversation_id = %(conversation)s AND m.position = move.old_position

-- name: settle_renumbered
-- Second step: parked rows take their new positions.
UPDATE messages SET position = -position
WHERE conversation_id = %(conversation)s AND position < 0

-- name: record_renumbering
INSERT INTO conversation_renumberings
    (conversation_id, layout_version, lower_bound, upper_bound, old_positions, new_positions)
VALUES (%(conversation)s, %(layout)s, %(lower)s, %(upper)s, %(old_positions)s, %(new_positions)s)

-- name: renumberings_since
SELECT layout_version, lower_bound, upper_bound, old_positions, new_positions
FROM conversation_renumberings
WHERE conversation_id = %(conversation)s AND layout_version > %(layout)s
ORDER BY layout_version


-- Idempotency keys -----------------------------------------------------------------

-- name: recall
SELECT fingerprint, response, created_at, message_count FROM idempotency_keys
WHERE conversation_id = %(conversation)s AND key = %(key)s

-- name: remember
-- A whole response (message_count NULL), over an expired key if any.
INSERT INTO idempotency_keys (conversation_id, key, fingerprint, response, created_at)
VALUES (%(conversation)s, %(key)s, %(fingerprint)s, %(response)s, %(created_at)s)
ON CONFLICT (conversation_id, key) DO UPDATE
SET fingerprint = excluded.fingerprint, response = excluded.response,
    created_at = excluded.created_at, message_count = NULL

-- name: forget_calls
-- The age again outside: a key kept anew over an expired one meanwhile
-- (remember) is not old.
DELETE FROM idempotency_keys
WHERE created_at < %(created_before)s AND (conversation_id, key) IN (
    SELECT conversation_id, key FROM idempotency_keys
    WHERE created_at < %(created_before)s LIMIT %(limit)s
)


-- Idempotency keys of a subject (of no one existing conversation) -------------------

-- name: recall_call
SELECT fingerprint, response, created_at, conversation_id FROM call_keys
WHERE subject = %(subject)s AND key = %(key)s

-- name: keep_call
-- Over an expired key, not a fresh one: then no row comes back. A
-- concurrent keeper of the same key waits here for this transaction's end.
INSERT INTO call_keys (subject, key, conversation_id, fingerprint, response, created_at)
VALUES (%(subject)s, %(key)s, %(owner)s, %(fingerprint)s, %(response)s, %(created_at)s)
ON CONFLICT (subject, key) DO UPDATE
SET conversation_id = excluded.conversation_id, fingerprint = excluded.fingerprint,
    response = excluded.response, created_at = excluded.created_at
WHERE call_keys.created_at <= %(expired_at)s
RETURNING 1

-- name: forget_kept_calls
-- As forget_calls, the age checked outside too (keep_call).
DELETE FROM call_keys
WHERE created_at < %(created_before)s AND (subject, key) IN (
    SELECT subject, key FROM call_keys
    WHERE created_at < %(created_before)s LIMIT %(limit)s
)

-- Snapshots ---------------------------------------------------------------------------

-- name: insert_snapshot
INSERT INTO snapshots (conversation_id, id, created_at, item_count, message_ids)
VALUES (%(conversation)s, %(snapshot)s, %(created_at)s, %(item_count)s, %(packed)s)

-- name: freeze_messages
-- Freezes the named messages no snapshot has frozen yet, and keeps each of
-- their bodies once per conversation.
WITH frozen AS (
    INSERT INTO snapshot_messages (conversation_id, message_id, role, kind, body_sha256,
        created_at, wire_head, wire_tail)
    SELECT %(conversation)s, m.id, m.role, m.kind, m.body_sha256, m.created_at,
        substring(m.entry FOR m.body_offset),
        substring(m.entry FROM m.body_offset + m.body_length + 1)
    FROM (
        SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid AS id
        FROM generate_series(1, length(%(packed)s) / 16) AS n
    ) AS wanted
    CROSS JOIN LATERAL (
        SELECT id, role, kind, body_sha256, created_at, entry, body_offset, body_length
        FROM messages
        WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = wanted.id
        OFFSET 0
    ) AS m
    -- Most messages were frozen by an earlier snapshot (of the same
    -- context, one turn shorter): skip them. OFFSET 0 keeps this a probe
    -- of the key per id, whatever the statistics say.
    WHERE NOT EXISTS (
        SELECT 1 FROM snapshot_messages
        WHERE conversation_id = %(conversation)s AND message_id = wanted.id
        OFFSET 0
    )
    ON CONFLICT DO NOTHING
    RETURNING message_id
)
INSERT INTO snapshot_bodies (conversation_id, sha256, body)
SELECT %(conversation)s, m.body_sha256, substring(m.entry FROM m.body_offset + 1 FOR m.body_length)
FROM frozen
CROSS JOIN LATERAL (
    SELECT body_sha256, entry, body_offset, body_length FROM messages
    WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = frozen.message_id
    OFFSET 0
) AS m
ON CONFLICT DO NOTHING

-- name: count_existing
-- How many of the named ids (repeats counted) are messages of the conversation.
SELECT count(*) FROM (
    SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid AS id
    FROM generate_series(1, length(%(packed)s) / 16) AS n
) AS wanted
CROSS JOIN LATERAL (
    SELECT 1 FROM messages WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = wanted.id
    OFFSET 0
) AS found

-- name: snapshot
SELECT conversation_id, created_at, item_count FROM snapshots
WHERE id = %(snapshot)s LIMIT 1

-- name: snapshot_id_slice
-- A slice of a snapshot's packed ids: 16 bytes per item, 1-based offsets.
SELECT substring(message_ids FROM %(start)s FOR %(length)s) FROM snapshots
WHERE conversation_id = %(conversation)s AND id = %(snapshot)s

-- name: snapshot_message_page
-- Items of a snapshot after an index, each with its frozen message's
-- encoding, under the byte budget as in message_page.
SELECT idx, CASE WHEN n = 1 OR before < %(budget)s THEN wire_head || body || wire_tail END
FROM (
    SELECT idx, wire_head, body, wire_tail,
           row_number() OVER w AS n,
           sum(size) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before,
           sum(size) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING)
               AS before_previous
    FROM (
        SELECT %(after)s + n AS idx, sm.wire_head, sb.body, sm.wire_tail,
               octet_length(sm.wire_head) + octet_length(sb.body) + octet_length(sm.wire_tail)
                   AS size
        FROM (
            SELECT substring(message_ids FROM %(start)s FOR %(length)s) AS ids
            FROM snapshots WHERE conversation_id = %(conversation)s AND id = %(snapshot)s
        ) AS slice
        CROSS JOIN generate_series(1, length(slice.ids) / 16) AS n
        CROSS JOIN LATERAL (
            SELECT wire_head, wire_tail, body_sha256 FROM snapshot_messages
            WHERE conversation_id = %(conversation)s
                AND message_id = encode(substring(slice.ids FROM n * 16 - 15 FOR 16), 'hex')::uuid
            OFFSET 0
        ) AS sm
        CROSS JOIN LATERAL (
            SELECT body FROM snapshot_bodies
            WHERE conversation_id = %(conversation)s AND sha256 = sm.body_sha256
            OFFSET 0
        ) AS sb
        ORDER BY n LIMIT %(limit)s
    ) AS candidates
    WINDOW w AS (ORDER BY idx)
) AS page
WHERE n <= 2 OR before_previous < %(budget)s
ORDER BY idx


-- Conversations as a whole (the companion API) ------------------------------------------

-- name: conversation_record
-- A conversation's row as the companion API shows it; its labels come
-- from labels_of.
SELECT message_count, updated_at, tail_position, layout_version, version, created_at, title,
       has_retention, retention_max_idle, retention_max_messages
FROM conversations WHERE id = %(conversation)s

-- name: labels_of
-- The labels of the named conversations (packed ids), by a probe of the
-- primary key per id.
SELECT l.conversation_id, l.key, l.value
FROM (
    SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid AS id
    FROM generate_series(1, length(%(packed)s) / 16) AS n
) AS wanted
CROSS JOIN LATERAL (
    SELECT conversation_id, key, value FROM conversation_labels
    WHERE conversation_id = wanted.id
    OFFSET 0
) AS l

-- name: conversations_newest_first
-- A page of ListConversations, newest first: a backward range scan of
-- conversations_by_update between two keys (updated_at, id), both
-- excluded, keeping the conversations that carry every label of the
-- filter (none: all). Reads no message. With a filter, a page walks this
-- way only when each of its labels is common (label_matches).
SELECT c.id, c.message_count, c.updated_at, c.tail_position, c.layout_version, c.version,
       c.created_at, c.title, c.has_retention, c.retention_max_idle, c.retention_max_messages
FROM conversations AS c
WHERE (c.updated_at, c.id) > (%(after_at)s, %(after_id)s)
    AND (c.updated_at, c.id) < (%(before_at)s, %(before_id)s)
    AND NOT EXISTS (
        SELECT 1 FROM unnest(%(label_keys)s::text[], %(label_values)s::bytea[]) AS w(key, value)
        WHERE NOT EXISTS (
            SELECT 1 FROM conversation_labels AS l
            WHERE l.conversation_id = c.id AND l.key = w.key AND l.value = w.value
        )
    )
ORDER BY c.updated_at DESC, c.id DESC LIMIT %(limit)s

-- name: conversations_oldest_first
-- The same, forward.
SELECT c.id, c.message_count, c.updated_at, c.tail_position, c.layout_version, c.version,
       c.created_at, c.title, c.has_retention, c.retention_max_idle, c.retention_max_messages
FROM conversations AS c
WHERE (c.updated_at, c.id) > (%(after_at)s, %(after_id)s)
    AND (c.updated_at, c.id) < (%(before_at)s, %(before_id)s)
    AND NOT EXISTS (
        SELECT 1 FROM unnest(%(label_keys)s::text[], %(label_values)s::bytea[]) AS w(key, value)
        WHERE NOT EXISTS (
            SELECT 1 FROM conversation_labels AS l
            WHERE l.conversation_id = c.id AND l.key = w.key AND l.value = w.value
        )
    )
ORDER BY c.updated_at, c.id LIMIT %(limit)s

-- name: conversations_by_label
-- A page of ListConversations with a filter one of whose labels (the
-- driver) few conversations carry: those are read from
-- conversation_labels_by_value and sorted, keeping the ones that carry
-- every label, newest first (newest_first true) or oldest first (the
-- sort runs anyway: one query serves both orders). OFFSET 0 keeps that
-- shape whatever the statistics say.
SELECT c.id, c.message_count, c.updated_at, c.tail_position, c.layout_version, c.version,
       c.created_at, c.title, c.has_retention, c.retention_max_idle, c.retention_max_messages
FROM (
    SELECT conversation_id FROM conversation_labels
    WHERE key = %(driver_key)s AND value = %(driver_value)s
    OFFSET 0
) AS d
CROSS JOIN LATERAL (
    SELECT * FROM conversations WHERE id = d.conversation_id
    OFFSET 0
) AS c
WHERE (c.updated_at, c.id) > (%(after_at)s, %(after_id)s)
    AND (c.updated_at, c.id) < (%(before_at)s, %(before_id)s)
    AND NOT EXISTS (
        SELECT 1 FROM unnest(%(label_keys)s::text[], %(label_values)s::bytea[]) AS w(key, value)
        WHERE NOT EXISTS (
            SELECT 1 FROM conversation_labels AS l
            WHERE l.conversation_id = c.id AND l.key = w.key AND l.value = w.value
        )
    )
ORDER BY CASE WHEN %(newest_first)s THEN c.updated_at END DESC,
    CASE WHEN %(newest_first)s THEN c.id END DESC,
    c.updated_at, c.id
LIMIT %(limit)s

-- name: label_matches
-- How many conversations carry each label of a filter, counted up to
-- a cap: a page is driven from the rarest label, or walks the
-- order when each is common (transactions.Read.conversation_page).
SELECT w.key, (
    SELECT count(*) FROM (
        SELECT 1 FROM conversation_labels AS l
        WHERE l.key = w.key AND l.value = w.value LIMIT %(cap)s
    ) AS carrying
)
FROM unnest(%(label_keys)s::text[], %(label_values)s::bytea[]) AS w(key, value)

-- name: save_record
-- A conversation's whole row (its labels: clear_labels, insert_labels).
UPDATE conversations
SET message_count = %(count)s, updated_at = %(updated_at)s, tail_position = %(tail)s,
    layout_version = %(layout)s, version = %(version)s, created_at = %(created_at)s,
    title = %(title)s, has_retention = %(has_retention)s,
    retention_max_idle = %(max_idle)s, retention_max_messages = %(max_messages)s
WHERE id = %(conversation)s

-- name: clear_labels
DELETE FROM conversation_labels WHERE conversation_id = %(conversation)s

-- name: insert_labels
INSERT INTO conversation_labels (conversation_id, key, value)
SELECT %(conversation)s, * FROM unnest(%(key)s::text[], %(value)s::bytea[])

-- name: conversation_contents
-- What erasing the conversation removes: its messages (detached ones too)
-- and its snapshots.
SELECT (SELECT count(*) FROM messages WHERE conversation_id = %(conversation)s),
       (SELECT count(*) FROM snapshots WHERE conversation_id = %(conversation)s)

-- name: erase_frozen_messages
-- Erasure of locked conversations, one (DeleteConversation) or many (the
-- retention sweeper). Frozen copies refer to no conversation row, so they
-- go by hand.
DELETE FROM snapshot_messages WHERE conversation_id = ANY(%(erased)s::uuid[])

-- name: erase_frozen_bodies
DELETE FROM snapshot_bodies WHERE conversation_id = ANY(%(erased)s::uuid[])

-- name: erase_conversations
-- Every other table of a conversation refers to its row ON DELETE
-- CASCADE: messages, renumberings, snapshots, idempotency keys, labels
-- and the state of its scope go with it, in this statement. The DELETE
-- waits for the transactions that hold the row FOR KEY SHARE
-- (hold_conversations) to end, and then takes their state along.
DELETE FROM conversations WHERE id = ANY(%(erased)s::uuid[])


-- State scoped to an app, a user or a conversation (the companion API) -------------------

-- name: scoped_state
SELECT values_json, version FROM scoped_state WHERE scope = %(scope)s

-- name: hold_conversations
-- Of the named conversations (packed ids), those that exist, in the order
-- of their ids, share-locked so that none is deleted before the
-- transaction ends (FOR KEY SHARE: the lightest lock a delete waits for).
SELECT id FROM conversations
WHERE id = ANY(ARRAY(
    SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid
    FROM generate_series(1, length(%(packed)s) / 16) AS n
))
ORDER BY id
FOR KEY SHARE

-- name: create_scopes
-- The scopes' rows that do not exist yet, at the empty state (version 0),
-- in the order given. A concurrent maker of the same row makes this wait
-- for its outcome; either way the row then exists for lock_scopes.
INSERT INTO scoped_state (scope, conversation_id, values_json, version)
SELECT new.scope, new.owner, '{}'::bytea, 0
FROM unnest(%(scope)s::text[], %(owner)s::uuid[]) WITH ORDINALITY AS new(scope, owner, n)
ORDER BY new.n
ON CONFLICT (scope) DO NOTHING

-- name: lock_scopes
-- The named scopes' rows (a JSON array of their keys), locked until the
-- transaction ends. Every transaction locks them in the order of the keys'
-- bytes, the order create_scopes is given them in.
SELECT scope, values_json, version FROM scoped_state
WHERE scope = ANY(ARRAY(SELECT json_array_elements_text(%(scopes)s::json)))
ORDER BY scope COLLATE "C"
FOR UPDATE

-- name: save_states
UPDATE scoped_state AS s
SET values_json = new.values_json, version = new.version
FROM unnest(%(scope)s::text[], %(values_json)s::bytea[], %(version)s::bigint[])
    AS new(scope, values_json, version)
WHERE s.scope = new.scope


-- Retention (the sweeper) ------------------------------------------------------------------
--
-- Each query locks what it returns FOR UPDATE SKIP LOCKED: a conversation
-- another transaction holds (a writer, another server's sweeper) is left
-- for a later sweep, so servers sweeping one database at once never take
-- the same conversation and never wait for one another. A row changed
-- meanwhile is checked again as it is now before it is locked.

-- name: idle_by_own_retention
-- Conversations with a retention of their own (the partial index
-- conversations_own_retention) not updated for longer than its max_idle
-- (0: kept forever) at `now`, compared in exact microseconds.
SELECT id FROM conversations
WHERE has_retention AND retention_max_idle > 0
    AND extract(epoch FROM %(now)s - updated_at) * 1000000 > retention_max_idle
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: idle_by_default
-- Conversations under the server's default retention not updated since
-- `cutoff`, oldest first: a range scan of conversations_by_update.
SELECT id FROM conversations
WHERE updated_at < %(cutoff)s AND NOT has_retention
ORDER BY updated_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: overlong_by_own_retention
-- Conversations with a retention of their own holding more messages than
-- its max_messages (0: no limit), with that limit.
SELECT id, message_count, retention_max_messages FROM conversations
WHERE has_retention AND retention_max_messages > 0 AND message_count > retention_max_messages
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: overlong_by_default
-- Conversations under the server's default retention holding more than
-- `max_messages`. No index orders conversations by length (keeping one up
-- to date would cost every append), so this reads the table of
-- conversations (not of messages); it runs only when the default sets a
-- limit.
SELECT id, message_count FROM conversations
WHERE NOT has_retention AND message_count > %(max_messages)s
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: trim_messages
-- Each trimmed conversation's `count` oldest entries leave the ordering
-- and their messages are deleted, as DeleteConversationMessagesRange
-- deletes (snapshots keep their frozen copies): a range scan of
-- messages_ordering from the head, each.
WITH oldest AS (
    SELECT t.id, o.position
    FROM unnest(%(trimmed)s::uuid[], %(count)s::bigint[]) AS t(id, count)
    CROSS JOIN LATERAL (
        SELECT position FROM messages
        WHERE conversation_id = t.id AND position IS NOT NULL
        ORDER BY position LIMIT t.count
    ) AS o
)
DELETE FROM messages AS m USING oldest
WHERE m.conversation_id = oldest.id AND m.position = oldest.position

-- name: shorten_conversations
-- A trim is a change of the ordering (version + 1) but no update by a
-- client: updated_at stays, so the conversation's idleness goes on.
UPDATE conversations AS c
SET message_count = c.message_count - t.count, version = c.version + 1
FROM unnest(%(trimmed)s::uuid[], %(count)s::bigint[]) AS t(id, count)
WHERE c.id = t.id


-- Reading and forking the ordering (the companion API) ------------------------------------

-- name: entry_sizes
-- Of the named messages (packed ids), those in the conversation's
-- ordering, with the size of their encoding. octet_length reads the size
-- of a stored value from its header, not the value: GetMessages checks the
-- response limit before any entry leaves the server.
SELECT m.id, m.size
FROM (
    SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid AS id
    FROM generate_series(1, length(%(packed)s) / 16) AS n
) AS wanted
CROSS JOIN LATERAL (
    SELECT id, octet_length(entry) AS size FROM messages
    WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = wanted.id AND position IS NOT NULL
    OFFSET 0
) AS m

-- name: entries_of
-- The encodings of the named messages (packed ids) of the conversation's
-- ordering.
SELECT m.id, m.entry
FROM (
    SELECT encode(substring(%(packed)s FROM n * 16 - 15 FOR 16), 'hex')::uuid AS id
    FROM generate_series(1, length(%(packed)s) / 16) AS n
) AS wanted
CROSS JOIN LATERAL (
    SELECT id, entry FROM messages
    WHERE conversation_id = (SELECT %(conversation)s::uuid) AND id = wanted.id AND position IS NOT NULL
    OFFSET 0
) AS m

-- name: snapshots_after
-- A page of ListConversationSnapshots: the conversation's snapshots after
-- a key (created_at, id), oldest first; one range scan of
-- snapshots_by_creation.
SELECT id, created_at, item_count FROM snapshots
WHERE conversation_id = %(conversation)s AND (created_at, id) > (%(after_at)s, %(after_id)s)
ORDER BY created_at, id LIMIT %(limit)s

-- name: hold_conversation
-- The row of the conversation a fork copies, locked shared until the
-- transaction ends: its writers (who lock it FOR NO KEY UPDATE, or update
-- it in one statement) wait, so every read of it in the transaction sees
-- one state; readers and other forks of it do not wait.
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = %(conversation)s FOR SHARE

-- name: originals
-- A batch of the messages a fork copies: entries of the ordering of a held
-- conversation with after < position <= last, in order, each with all of
-- its message but the body, which copy_messages copies in the database.
SELECT position, id, role, kind, body_length, created_at FROM messages
WHERE conversation_id = %(conversation)s AND position > %(after)s AND position <= %(last)s
ORDER BY position LIMIT %(limit)s

-- name: copy_messages
-- Copies of messages of a held conversation (source) into this one, under
-- new ids at their new positions: each copy's entry is its own head and
-- tail around the body cut out of the original's entry (as
-- freeze_messages cuts it), so that bodies never leave the database. The
-- conversation's largest entry is kept up to date.
WITH inserted AS (
    INSERT INTO messages (conversation_id, id, position, role, kind, entry, body_offset,
        body_length, body_sha256, created_at)
    SELECT %(conversation)s, copy.id, copy.position, m.role, m.kind,
        copy.head || substring(m.entry FROM m.body_offset + 1 FOR m.body_length) || copy.tail,
        octet_length(copy.head), m.body_length, m.body_sha256, m.created_at
    FROM unnest(%(original)s::uuid[], %(id)s::uuid[], %(position)s::bigint[],
        %(head)s::bytea[], %(tail)s::bytea[]) AS copy(original, id, position, head, tail)
    CROSS JOIN LATERAL (
        SELECT role, kind, entry, body_offset, body_length, body_sha256, created_at
        FROM messages WHERE conversation_id = (SELECT %(source)s::uuid) AND id = copy.original
        OFFSET 0
    ) AS m
    RETURNING octet_length(entry) AS size
)
UPDATE conversations SET largest_entry = greatest(largest_entry, (SELECT max(size) FROM inserted))
WHERE id = %(conversation)s


-- Checkpoints (agentstate.v1.CheckpointsService) ----------------------------------------
--
-- Text keys are stored as their UTF-8 bytes (bytea), so they compare and
-- sort byte for byte whatever the collation. Lists of keys arrive as one
-- JSON array; blob digests packed 32 bytes each.

-- name: create_thread
-- The thread's row, unless it exists: what writers hold and the
-- thread-wide operations lock, and the tombstone of its erasures.
INSERT INTO checkpoint_threads (thread_id, erased_through) VALUES (%(thread)s, '')
ON CONFLICT (thread_id) DO NOTHING

-- name: hold_thread
-- A writer's hold on its thread (FOR KEY SHARE: writers of one thread do
-- not wait for each other; the thread-wide operations, FOR UPDATE, wait
-- for them and they for those).
SELECT erased_through FROM checkpoint_threads WHERE thread_id = %(thread)s FOR KEY SHARE

-- name: lock_threads
-- The named threads' rows (a JSON array), locked in the order of their ids.
SELECT thread_id, erased_through FROM checkpoint_threads
WHERE thread_id = ANY(ARRAY(
    SELECT convert_to(t, 'UTF8') FROM json_array_elements_text(%(threads)s::json) AS t
))
ORDER BY thread_id
FOR UPDATE

-- name: stored_checkpoints
-- Of the named checkpoint ids (a JSON array), those stored in the thread's
-- namespace.
SELECT checkpoint_id FROM checkpoints
WHERE thread_id = %(thread)s AND checkpoint_ns = %(ns)s AND checkpoint_id = ANY(ARRAY(
    SELECT convert_to(c, 'UTF8') FROM json_array_elements_text(%(ids)s::json) AS c
))

-- name: insert_blobs
-- Each distinct item once per thread: one already there is left as it is
-- (its digest says it holds the same bytes).
INSERT INTO checkpoint_blobs (thread_id, sha256, type, data)
SELECT %(thread)s, * FROM unnest(%(sha256)s::bytea[], %(type)s::bytea[], %(data)s::bytea[])
ON CONFLICT DO NOTHING

-- name: insert_values
-- A version names one value for good: one already stored stays.
INSERT INTO checkpoint_values (thread_id, checkpoint_ns, channel, version, is_list,
    base_version, depth, length, list_sha256, items)
SELECT %(thread)s, %(ns)s, * FROM unnest(%(channel)s::bytea[], %(version)s::bytea[],
    %(is_list)s::boolean[], %(base_version)s::bytea[], %(depth)s::integer[],
    %(length)s::integer[], %(list_sha256)s::bytea[], %(items)s::bytea[])
ON CONFLICT DO NOTHING

-- name: value_heads
-- The named values' rows without their items (a JSON array of [namespace,
-- channel, version] of the thread): what a put extends.
SELECT k ->> 0, k ->> 1, k ->> 2, v.is_list, v.depth, v.length, v.list_sha256
FROM json_array_elements(%(wanted)s::json) AS k
JOIN checkpoint_values AS v ON v.thread_id = %(thread)s
    AND v.checkpoint_ns = convert_to(k ->> 0, 'UTF8') AND v.channel = convert_to(k ->> 1, 'UTF8')
    AND v.version = convert_to(k ->> 2, 'UTF8')

-- name: put_checkpoint
INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
    checkpoint_type, checkpoint, metadata, channel_versions, run_id)
VALUES (%(thread)s, %(ns)s, %(checkpoint)s, %(parent)s, %(type)s, %(data)s, %(metadata)s,
    %(versions)s, %(run)s)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE
SET parent_checkpoint_id = excluded.parent_checkpoint_id,
    checkpoint_type = excluded.checkpoint_type, checkpoint = excluded.checkpoint,
    metadata = excluded.metadata, channel_versions = excluded.channel_versions,
    run_id = excluded.run_id

-- name: put_writes
-- A write with idx >= 0 already stored is a retry and stays; a special
-- write (negative idx) replaces the one stored.
INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
    task_path, channel, is_list, items)
SELECT %(thread)s, %(ns)s, %(checkpoint)s, %(task)s, w.idx, %(task_path)s, w.channel,
    w.is_list, w.items
FROM unnest(%(idx)s::integer[], %(channel)s::bytea[], %(is_list)s::boolean[],
    %(items)s::bytea[]) AS w(idx, channel, is_list, items)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
SET task_path = excluded.task_path, channel = excluded.channel, is_list = excluded.is_list,
    items = excluded.items
WHERE excluded.idx < 0

-- name: latest_checkpoint
-- The newest checkpoint of a thread's namespace: the primary key read
-- backwards, one row.
SELECT checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint, metadata,
    channel_versions
FROM checkpoints WHERE thread_id = %(thread)s AND checkpoint_ns = %(ns)s
ORDER BY checkpoint_id DESC LIMIT 1

-- name: checkpoint
SELECT checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint, metadata,
    channel_versions
FROM checkpoints
WHERE thread_id = %(thread)s AND checkpoint_ns = %(ns)s AND checkpoint_id = %(checkpoint)s

-- name: namespace_checkpoints
-- A page of a thread's namespace, newest first: the primary key read
-- backwards from below_id.
SELECT checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint, metadata,
    channel_versions
FROM checkpoints
WHERE thread_id = %(thread)s AND checkpoint_ns = %(ns)s AND checkpoint_id < %(below_id)s
ORDER BY checkpoint_id DESC LIMIT %(limit)s

-- name: thread_checkpoints_page
-- A page of a thread, every namespace, newest first (ties: namespace,
-- descending), below the key (below_id, below_ns).
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint,
    metadata, channel_versions
FROM checkpoints
WHERE thread_id = %(thread)s AND (checkpoint_id, checkpoint_ns) < (%(below_id)s, %(below_ns)s)
ORDER BY checkpoint_id DESC, checkpoint_ns DESC LIMIT %(limit)s

-- name: every_checkpoint_page
-- A page of every thread (one namespace, or any), newest first (ties:
-- namespace, then thread, descending): an administrator's listing, which
-- reads the whole table.
SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type,
    checkpoint, metadata, channel_versions
FROM checkpoints
WHERE (checkpoint_id, checkpoint_ns, thread_id) < (%(below_id)s, %(below_ns)s, %(below_thread)s)
    AND (%(any_ns)s OR checkpoint_ns = %(ns)s)
ORDER BY checkpoint_id DESC, checkpoint_ns DESC, thread_id DESC LIMIT %(limit)s

-- name: value_chains
-- The named values (a JSON array of [thread, namespace, channel, version])
-- and, for each, the chain of values it extends (base_version), each link
-- at its depth below the value named: its items follow those of the
-- deeper links. One primary-key probe per link.
WITH RECURSIVE wanted AS (
    SELECT convert_to(w ->> 0, 'UTF8') AS thread_id, convert_to(w ->> 1, 'UTF8') AS ns,
        convert_to(w ->> 2, 'UTF8') AS channel, convert_to(w ->> 3, 'UTF8') AS version
    FROM json_array_elements(%(wanted)s::json) AS w
), chain AS (
    SELECT w.thread_id, w.ns, w.channel, w.version AS head, 0 AS depth, v.is_list,
        v.base_version, v.items
    FROM wanted AS w
    CROSS JOIN LATERAL (
        SELECT is_list, base_version, items FROM checkpoint_values
        WHERE thread_id = w.thread_id AND checkpoint_ns = w.ns AND channel = w.channel
            AND version = w.version
        OFFSET 0
    ) AS v
    UNION ALL
    SELECT c.thread_id, c.ns, c.channel, c.head, c.depth + 1, v.is_list, v.base_version,
        v.items
    FROM chain AS c
    JOIN checkpoint_values AS v ON v.thread_id = c.thread_id AND v.checkpoint_ns = c.ns
        AND v.channel = c.channel AND v.version = c.base_version
)
SELECT thread_id, ns, channel, head, depth, is_list, items FROM chain

-- name: pending_writes
-- The writes of the named checkpoints (a JSON array of [thread,
-- namespace, checkpoint]), in LangGraph's order (writes_sort_key).
SELECT w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.task_path, w.idx,
    w.channel, w.is_list, w.items
FROM json_array_elements(%(wanted)s::json) AS k
JOIN checkpoint_writes AS w ON w.thread_id = convert_to(k ->> 0, 'UTF8')
    AND w.checkpoint_ns = convert_to(k ->> 1, 'UTF8')
    AND w.checkpoint_id = convert_to(k ->> 2, 'UTF8')
ORDER BY w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_path, w.task_id, w.idx

-- name: blobs_of
-- The thread's blobs among the packed digests.
SELECT b.sha256, b.type, b.data
FROM generate_series(1, length(%(packed)s) / 32) AS n
JOIN checkpoint_blobs AS b ON b.thread_id = %(thread)s
    AND b.sha256 = substring(%(packed)s FROM n * 32 - 31 FOR 32)

-- name: greatest_ids
-- The greatest checkpoint id of the thread's checkpoints and of its writes
-- (primary keys read backwards); NULL for none.
SELECT (SELECT checkpoint_id FROM checkpoints WHERE thread_id = %(thread)s
        ORDER BY checkpoint_id DESC LIMIT 1),
    (SELECT checkpoint_id FROM checkpoint_writes WHERE thread_id = %(thread)s
        ORDER BY checkpoint_id DESC LIMIT 1)

-- name: count_checkpoints
SELECT count(*) FROM checkpoints WHERE thread_id = %(thread)s

-- name: erase_checkpoints
DELETE FROM checkpoints WHERE thread_id = %(thread)s

-- name: erase_values
DELETE FROM checkpoint_values WHERE thread_id = %(thread)s

-- name: erase_writes
DELETE FROM checkpoint_writes WHERE thread_id = %(thread)s

-- name: erase_blobs
DELETE FROM checkpoint_blobs WHERE thread_id = %(thread)s

-- name: mark_erased
UPDATE checkpoint_threads SET erased_through = %(erased)s WHERE thread_id = %(thread)s

-- name: copy_checkpoints
-- CopyThread, into a target erased before: rows of the source under the
-- target's id.
INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
    checkpoint_type, checkpoint, metadata, channel_versions, run_id)
SELECT %(target)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type,
    checkpoint, metadata, channel_versions, run_id
FROM checkpoints WHERE thread_id = %(source)s

-- name: copy_values
INSERT INTO checkpoint_values (thread_id, checkpoint_ns, channel, version, is_list,
    base_version, depth, length, list_sha256, items)
SELECT %(target)s, checkpoint_ns, channel, version, is_list, base_version, depth, length,
    list_sha256, items
FROM checkpoint_values WHERE thread_id = %(source)s

-- name: copy_writes
INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
    task_path, channel, is_list, items)
SELECT %(target)s, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, is_list,
    items
FROM checkpoint_writes WHERE thread_id = %(source)s

-- name: copy_blobs
INSERT INTO checkpoint_blobs (thread_id, sha256, type, data)
SELECT %(target)s, sha256, type, data FROM checkpoint_blobs WHERE thread_id = %(source)s

-- name: thread_checkpoints
-- Every checkpoint of a thread, without its bytes: what pruning and
-- collecting garbage decide from.
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, channel_versions, run_id
FROM checkpoints WHERE thread_id = %(thread)s

-- name: run_checkpoints
-- The checkpoints of the named runs (a JSON array), any thread: the
-- partial index checkpoints_by_run.
SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints
WHERE run_id = ANY(ARRAY(
    SELECT convert_to(r, 'UTF8') FROM json_array_elements_text(%(runs)s::json) AS r
))

-- name: delete_checkpoints
DELETE FROM checkpoints AS c
USING unnest(%(ns)s::bytea[], %(checkpoint)s::bytea[]) AS d(ns, checkpoint)
WHERE c.thread_id = %(thread)s AND c.checkpoint_ns = d.ns AND c.checkpoint_id = d.checkpoint

-- name: delete_checkpoint_writes
-- The writes of deleted checkpoints (only theirs: a run may store a
-- step's writes before its checkpoint).
DELETE FROM checkpoint_writes AS w
USING unnest(%(ns)s::bytea[], %(checkpoint)s::bytea[]) AS d(ns, checkpoint)
WHERE w.thread_id = %(thread)s AND w.checkpoint_ns = d.ns AND w.checkpoint_id = d.checkpoint

-- name: orphan_children
-- A checkpoint whose parent is no longer stored gets no parent.
UPDATE checkpoints AS c SET parent_checkpoint_id = NULL
WHERE c.thread_id = %(thread)s AND c.parent_checkpoint_id IS NOT NULL
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints AS p
        WHERE p.thread_id = c.thread_id AND p.checkpoint_ns = c.checkpoint_ns
            AND p.checkpoint_id = c.parent_checkpoint_id
    )

-- name: thread_values
SELECT checkpoint_ns, channel, version, base_version, items
FROM checkpoint_values WHERE thread_id = %(thread)s

-- name: thread_write_items
SELECT items FROM checkpoint_writes WHERE thread_id = %(thread)s

-- name: thread_blob_digests
SELECT sha256 FROM checkpoint_blobs WHERE thread_id = %(thread)s

-- name: delete_values
DELETE FROM checkpoint_values AS v
USING unnest(%(thread)s::bytea[], %(ns)s::bytea[], %(channel)s::bytea[], %(version)s::bytea[])
    AS d(thread_id, ns, channel, version)
WHERE v.thread_id = d.thread_id AND v.checkpoint_ns = d.ns AND v.channel = d.channel
    AND v.version = d.version

-- name: delete_blobs
DELETE FROM checkpoint_blobs AS b
USING unnest(%(sha256)s::bytea[]) AS d(sha256)
WHERE b.thread_id = %(thread)s AND b.sha256 = d.sha256


-- Migrations ----------------------------------------------------------------------------

-- name: create_schema_migrations
-- The record of applied migrations (see migrations/__init__.py); the
-- migrations themselves never create it.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: schema_migrations_exists
SELECT to_regclass('schema_migrations') IS NOT NULL

-- name: applied_migrations
SELECT version, checksum FROM schema_migrations

-- name: record_migration
INSERT INTO schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)


-- only in this dialect

-- name: tables_marked_empty
-- The tables whose planner statistics say they are empty (reltuples 0:
-- migrations 3 and 4 ANALYZE them, and on a fresh database they are empty
-- then), and whether each holds rows by now. Until autovacuum's first
-- ANALYZE (up to a minute) the planner then takes a conversation for one
-- row and may scan it once per id where it should probe the primary key:
-- a snapshot of 1,600 ids took over 600 ms instead of about 10 ms.
SELECT relname::text,
       CASE relname
           WHEN 'messages' THEN EXISTS (SELECT 1 FROM messages)
           ELSE EXISTS (SELECT 1 FROM conversations)
       END
FROM pg_class
WHERE oid IN ('messages'::regclass, 'conversations'::regclass) AND reltuples = 0

-- name: analyze_messages
ANALYZE messages

-- name: analyze_conversations
ANALYZE conversations

-- name: conversation_and_message_page
-- (SQLite: conversation, then message_page, in one hop.) The conversation's
-- row first (position NULL), then the ordered entries after a position:
-- one statement reads one consistent state, so the page and its metadata
-- agree without BEGIN and COMMIT around them (a list call's hot path).
--
-- The entries are one range scan of messages_ordering, each row's stored
-- encoding sent as it is. The byte budget (common.budgeted_page cuts the
-- page) is summed here only when it can matter: when a page of the
-- conversation's largest entry fits in it, the plain scan runs; otherwise
-- a running sum leaves out (NULL) the encodings past the budget, so that
-- large bodies past it never leave the server. One of the two branches
-- runs: each is gated on the conversation row, read once. An empty role or
-- kind list matches everything: one constant text, so the prepared
-- statement is reused.
WITH conversation AS MATERIALIZED (
    SELECT message_count, updated_at, tail_position, layout_version, version,
           largest_entry::bigint * %(limit)s <= %(budget)s AS fits
    FROM conversations WHERE id = %(conversation)s
), candidates AS NOT MATERIALIZED (
    SELECT position, entry FROM messages
    WHERE conversation_id = %(conversation)s AND position > %(after)s
        AND (cardinality(%(roles)s::smallint[]) = 0 OR role = ANY(%(roles)s::smallint[]))
        AND (cardinality(%(kinds)s::bytea[]) = 0 OR kind = ANY(%(kinds)s::bytea[]))
    ORDER BY position LIMIT %(limit)s
)
SELECT NULL::bigint AS position, NULL::bytea AS entry,
       message_count, updated_at, tail_position, layout_version, version
FROM conversation
UNION ALL
(SELECT position, entry, NULL, NULL, NULL, NULL, NULL
 FROM candidates WHERE (SELECT fits FROM conversation)
 ORDER BY position)
UNION ALL
(SELECT position, CASE WHEN before = 0 OR before < %(budget)s THEN entry END,
        NULL, NULL, NULL, NULL, NULL
 FROM (
     SELECT position, entry,
            coalesce(sum(octet_length(entry)) OVER (
                ORDER BY position ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                AS before
     FROM candidates WHERE NOT (SELECT fits FROM conversation)
 ) AS summed
 ORDER BY position)

-- name: conversation_and_tail_page
-- (SQLite: conversation, then tail_page, in one hop.) The conversation's
-- row first (position NULL), then the last entries of its ordering that
-- match the filters, newest first: one range scan of messages_ordering
-- backwards that reads no more entries than it returns (no sort of the
-- conversation), each row's stored encoding sent as it is. The byte
-- budget is summed, newest first, only when it can matter, as in
-- conversation_and_message_page.
WITH conversation AS MATERIALIZED (
    SELECT message_count, updated_at, tail_position, layout_version, version,
           largest_entry::bigint * %(limit)s <= %(budget)s AS fits
    FROM conversations WHERE id = %(conversation)s
), candidates AS NOT MATERIALIZED (
    SELECT position, entry FROM messages
    WHERE conversation_id = %(conversation)s AND position IS NOT NULL
        AND (cardinality(%(roles)s::smallint[]) = 0 OR role = ANY(%(roles)s::smallint[]))
        AND (cardinality(%(kinds)s::bytea[]) = 0 OR kind = ANY(%(kinds)s::bytea[]))
    ORDER BY position DESC LIMIT %(limit)s
)
SELECT NULL::bigint AS position, NULL::bytea AS entry,
       message_count, updated_at, tail_position, layout_version, version
FROM conversation
UNION ALL
(SELECT position, entry, NULL, NULL, NULL, NULL, NULL
 FROM candidates WHERE (SELECT fits FROM conversation)
 ORDER BY position DESC)
UNION ALL
(SELECT position, CASE WHEN before = 0 OR before < %(budget)s THEN entry END,
        NULL, NULL, NULL, NULL, NULL
 FROM (
     SELECT position, entry,
            coalesce(sum(octet_length(entry)) OVER (
                ORDER BY position DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                AS before
     FROM candidates WHERE NOT (SELECT fits FROM conversation)
 ) AS summed
 ORDER BY position DESC)

-- name: append
-- An append's two writes in one statement (insert_messages and
-- save_conversation, created_at as there).
WITH inserted AS (
    INSERT INTO messages (conversation_id, id, position, role, kind, entry, body_offset,
        body_length, body_sha256, created_at)
    SELECT %(conversation)s, * FROM unnest(
        %(id)s::uuid[], %(position)s::bigint[], %(role)s::smallint[], %(kind)s::bytea[],
        %(entry)s::bytea[], %(body_offset)s::integer[], %(body_length)s::integer[],
        %(digest)s::bytea[], %(created_at)s::timestamptz[])
)
UPDATE conversations
SET message_count = %(count)s, updated_at = %(updated_at)s, tail_position = %(tail)s,
    layout_version = %(layout)s, version = %(version)s,
    created_at = CASE WHEN version = 0 THEN %(updated_at)s ELSE created_at END,
    largest_entry = greatest(largest_entry, %(largest)s)
WHERE id = %(conversation)s

-- name: lock_migrations
-- Held until the migration run's transaction ends: servers starting
-- together apply each migration once, one after the other. A
-- transaction-level lock cannot be left behind on a pooled session.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: suspend_statement_timeout
-- For the rest of this transaction only.
SELECT set_config('statement_timeout', '0', true)

-- name: set_statement_timeout
-- Milliseconds, as text; 0 turns the timeout off.
SELECT set_config('statement_timeout', %(milliseconds)s, false)
