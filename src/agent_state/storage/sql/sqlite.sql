-- The SQLite queries of the storage layer, loaded once by sql/__init__.py.
--
-- postgres.sql holds the same names in the same order, so the two files read
-- side by side; what only this dialect needs comes after the line
-- "-- only in this dialect". Parameters are named: :name here, %(name)s
-- there, with the same names in both.
--
-- sqlite3 runs one statement per call and limits the number of bound
-- parameters, so a statement over many rows (marked "one row per call") is
-- run through executemany, each column's parameter bound to one value per
-- row (PostgreSQL takes the same names as arrays); lists of ids that a
-- query reads travel as one blob of 16-byte ids that a recursive CTE splits
-- (`wanted`), as the PostgreSQL queries do with generate_series. The list filters of
-- message_page go through temporary tables of the connection
-- (temp.filter_roles, temp.filter_kinds): any number of values under one
-- constant query text.


-- Transactions ---------------------------------------------------------------

-- name: begin_write
-- Takes the database's one write lock at once: the transaction then sees
-- and locks the latest state, which a deferred BEGIN would not promise.
BEGIN IMMEDIATE

-- name: begin_read
-- One snapshot of the WAL for the whole read, so a page and its metadata agree.
BEGIN

-- name: commit
COMMIT

-- name: rollback
ROLLBACK


-- Conversations ----------------------------------------------------------------

-- name: create_conversation
-- An empty conversation, unless it exists. The locked path's transaction
-- saves its real created_at (save_conversation, save_record); the common
-- append gives it here.
INSERT OR IGNORE INTO conversations (id, created_at, updated_at)
VALUES (:conversation, :created_at, 0)

-- name: lock_conversation
-- The row a write transaction works on; begin_write holds the lock.
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = :conversation

-- name: conversation
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = :conversation

-- name: save_conversation
-- A row at version 0 was created by this transaction (create_conversation)
-- and gets its first change now: its created_at becomes that change's
-- updated_at, as append_at_tail gives a conversation it creates.
UPDATE conversations
SET message_count = :count, updated_at = :updated_at, tail_position = :tail,
    layout_version = :layout, version = :version,
    created_at = CASE WHEN version = 0 THEN :updated_at ELSE created_at END
WHERE id = :conversation

-- name: append_at_tail
-- The gate of the common append (after create_conversation, in one
-- transaction): moves the counters only when the condition holds and
-- returns the new row; no row: nothing is to be written (the caller rolls
-- back, which also takes back a conversation created for the append). The
-- caller then inserts and places the messages after the old tail. A
-- conversation just created is at version 0, as if_version counts an
-- absent one.
UPDATE conversations
SET message_count = message_count + :count,
    tail_position = tail_position + :count * :gap,
    version = version + 1,
    updated_at = :updated_at
WHERE id = :conversation
    AND (:if_version IS NULL OR version = :if_version)
    AND updated_at < :updated_at
    AND tail_position <= :max_position - :count * :gap
RETURNING message_count, updated_at, tail_position, layout_version, version


-- Messages and the ordering ------------------------------------------------------

-- name: lookup
-- Of the named ids, the messages of the conversation, with their position
-- (NULL when detached).
WITH RECURSIVE wanted (n, id) AS (
    SELECT 1, substr(:packed, 1, 16) WHERE length(:packed) >= 16
    UNION ALL
    SELECT n + 1, substr(:packed, n * 16 + 1, 16) FROM wanted WHERE n * 16 < length(:packed)
)
SELECT m.id, m.position
FROM wanted
JOIN messages m ON m.conversation_id = :conversation AND m.id = wanted.id

-- name: items_between
SELECT position, id FROM messages
WHERE conversation_id = :conversation AND position >= :lower AND position <= :upper
ORDER BY position

-- name: items_from
SELECT position, id FROM messages
WHERE conversation_id = :conversation AND position >= :lower
ORDER BY position

-- name: items_before
SELECT position, id FROM messages
WHERE conversation_id = :conversation AND position < :position
ORDER BY position DESC LIMIT :limit

-- name: items_after
-- Also the page of ListConversationMessageIds.
SELECT position, id FROM messages
WHERE conversation_id = :conversation AND position > :position
ORDER BY position LIMIT :limit

-- name: insert_messages
-- One row per call (executemany). New messages at their positions (NULL:
-- detached).
INSERT INTO messages (conversation_id, id, position, role, kind, entry, body_offset,
    body_length, body_sha256, created_at)
VALUES (:conversation, :id, :position, :role, :kind, :entry, :body_offset, :body_length,
    :digest, :created_at)

-- name: place
-- One row per call (executemany).
UPDATE messages SET position = :position WHERE conversation_id = :conversation AND id = :placed

-- name: unplace
-- One row per call (executemany).
UPDATE messages SET position = NULL WHERE conversation_id = :conversation AND id = :id

-- name: delete_messages
-- One row per call (executemany).
DELETE FROM messages WHERE conversation_id = :conversation AND id = :id



-- Renumberings -------------------------------------------------------------------

-- name: park_renumbered
-- First step of a renumbering, one row per call (executemany): the row
-- goes to its parked position (see common.parked_moves).
UPDATE messages SET position = :parked
WHERE conversation_id = :conversation AND position = :old_position

-- name: settle_renumbered
-- Second step: parked rows take their new positions.
UPDATE messages SET position = -position
WHERE conversation_id = :conversation AND position < 0

-- name: record_renumbering
INSERT INTO conversation_renumberings
    (conversation_id, layout_version, lower_bound, upper_bound, old_positions, new_positions)
VALUES (:conversation, :layout, :lower, :upper, :old_positions, :new_positions)

-- name: renumberings_since
SELECT layout_version, lower_bound, upper_bound, old_positions, new_positions
FROM conversation_renumberings
WHERE conversation_id = :conversation AND layout_version > :layout
ORDER BY layout_version


-- Idempotency keys -----------------------------------------------------------------

-- name: recall
SELECT fingerprint, response, created_at, message_count FROM idempotency_keys
WHERE conversation_id = :conversation AND key = :key

-- name: remember
-- A whole response (message_count NULL), over an expired key if any.
INSERT INTO idempotency_keys (conversation_id, key, fingerprint, response, created_at)
VALUES (:conversation, :key, :fingerprint, :response, :created_at)
ON CONFLICT (conversation_id, key) DO UPDATE
SET fingerprint = excluded.fingerprint, response = excluded.response,
    created_at = excluded.created_at, message_count = NULL

-- name: forget_calls
-- The age again outside: a key kept anew over an expired one meanwhile
-- (remember) is not old.
DELETE FROM idempotency_keys
WHERE created_at < :created_before AND (conversation_id, key) IN (
    SELECT conversation_id, key FROM idempotency_keys
    WHERE created_at < :created_before LIMIT :limit
)


-- Idempotency keys of a subject (of no one existing conversation) -------------------

-- name: recall_call
SELECT fingerprint, response, created_at, conversation_id FROM call_keys
WHERE subject = :subject AND key = :key

-- name: keep_call
-- Over an expired key, not a fresh one: then no row comes back. A
-- concurrent keeper of the same key waits here for this transaction's end.
INSERT INTO call_keys (subject, key, conversation_id, fingerprint, response, created_at)
VALUES (:subject, :key, :owner, :fingerprint, :response, :created_at)
ON CONFLICT (subject, key) DO UPDATE
SET conversation_id = excluded.conversation_id, fingerprint = excluded.fingerprint,
    response = excluded.response, created_at = excluded.created_at
WHERE call_keys.created_at <= :expired_at
RETURNING 1

-- name: forget_kept_calls
-- As forget_calls, the age checked outside too (keep_call).
DELETE FROM call_keys
WHERE created_at < :created_before AND (subject, key) IN (
    SELECT subject, key FROM call_keys
    WHERE created_at < :created_before LIMIT :limit
)

-- Snapshots ---------------------------------------------------------------------------

-- name: insert_snapshot
INSERT INTO snapshots (conversation_id, id, created_at, item_count, message_ids)
VALUES (:conversation, :snapshot, :created_at, :item_count, :packed)

-- name: freeze_messages
-- Freezes the named messages no snapshot has frozen yet and returns their
-- ids, whose bodies freeze_body then keeps.
INSERT INTO snapshot_messages (conversation_id, message_id, role, kind, body_sha256,
    created_at, wire_head, wire_tail)
SELECT m.conversation_id, m.id, m.role, m.kind, m.body_sha256, m.created_at,
    substr(m.entry, 1, m.body_offset), substr(m.entry, m.body_offset + m.body_length + 1)
FROM messages m
WHERE m.conversation_id = :conversation
    AND m.id IN (
        WITH RECURSIVE wanted (n, id) AS (
            SELECT 1, substr(:packed, 1, 16) WHERE length(:packed) >= 16
            UNION ALL
            SELECT n + 1, substr(:packed, n * 16 + 1, 16) FROM wanted
            WHERE n * 16 < length(:packed)
        )
        SELECT id FROM wanted
    )
    AND NOT EXISTS (
        SELECT 1 FROM snapshot_messages f
        WHERE f.conversation_id = m.conversation_id AND f.message_id = m.id
    )
RETURNING message_id

-- name: count_existing
-- How many of the named ids (repeats counted) are messages of the conversation.
WITH RECURSIVE wanted (n, id) AS (
    SELECT 1, substr(:packed, 1, 16) WHERE length(:packed) >= 16
    UNION ALL
    SELECT n + 1, substr(:packed, n * 16 + 1, 16) FROM wanted WHERE n * 16 < length(:packed)
)
SELECT count(*) FROM wanted
JOIN messages m ON m.conversation_id = :conversation AND m.id = wanted.id

-- name: snapshot
SELECT conversation_id, created_at, item_count FROM snapshots
WHERE id = :snapshot LIMIT 1

-- name: snapshot_id_slice
-- A slice of a snapshot's packed ids: 16 bytes per item, 1-based offsets.
SELECT substr(message_ids, :start, :length) FROM snapshots
WHERE conversation_id = :conversation AND id = :snapshot

-- name: snapshot_message_page
-- Items of a snapshot after an index, with their frozen message's
-- encoding, under the byte budget as in message_page.
WITH RECURSIVE slice (ids) AS (
    SELECT substr(message_ids, :start, :length) FROM snapshots
    WHERE conversation_id = :conversation AND id = :snapshot
), wanted (n, id) AS (
    SELECT 1, substr(ids, 1, 16) FROM slice WHERE length(ids) >= 16
    UNION ALL
    SELECT n + 1, substr(slice.ids, n * 16 + 1, 16) FROM wanted, slice
    WHERE n * 16 < length(slice.ids)
)
SELECT :after + wanted.n, CAST(f.wire_head || b.body || f.wire_tail AS BLOB)
FROM wanted
JOIN snapshot_messages f ON f.conversation_id = :conversation AND f.message_id = wanted.id
JOIN snapshot_bodies b ON b.conversation_id = f.conversation_id AND b.sha256 = f.body_sha256
ORDER BY wanted.n


-- Conversations as a whole (the companion API) ------------------------------------------

-- name: conversation_record
-- A conversation's row as the companion API shows it; its labels come
-- from labels_of.
SELECT message_count, updated_at, tail_position, layout_version, version, created_at, title,
       has_retention, retention_max_idle, retention_max_messages
FROM conversations WHERE id = :conversation

-- name: labels_of
-- The labels of the named conversations (packed ids).
WITH RECURSIVE wanted (n, id) AS (
    SELECT 1, substr(:packed, 1, 16) WHERE length(:packed) >= 16
    UNION ALL
    SELECT n + 1, substr(:packed, n * 16 + 1, 16) FROM wanted WHERE n * 16 < length(:packed)
)
SELECT l.conversation_id, l.key, l.value
FROM wanted
JOIN conversation_labels l ON l.conversation_id = wanted.id

-- name: conversations_newest_first
-- A page of ListConversations, newest first: a backward range scan of
-- conversations_by_update between two keys (updated_at, id), both
-- excluded, keeping the conversations that carry every label of the
-- filter staged in temp.filter_labels (none: all). Reads no message. With
-- a filter, a page walks this way only when each of its labels is common
-- (label_matches).
SELECT c.id, c.message_count, c.updated_at, c.tail_position, c.layout_version, c.version,
       c.created_at, c.title, c.has_retention, c.retention_max_idle, c.retention_max_messages
FROM conversations AS c
WHERE (c.updated_at, c.id) > (:after_at, :after_id)
    AND (c.updated_at, c.id) < (:before_at, :before_id)
    AND NOT EXISTS (
        SELECT 1 FROM temp.filter_labels AS w
        WHERE NOT EXISTS (
            SELECT 1 FROM conversation_labels AS l
            WHERE l.conversation_id = c.id AND l.key = w.key AND l.value = w.value
        )
    )
ORDER BY c.updated_at DESC, c.id DESC LIMIT :limit

-- name: conversations_oldest_first
-- The same, forward.
SELECT c.id, c.message_count, c.updated_at, c.tail_position, c.layout_version, c.version,
       c.created_at, c.title, c.has_retention, c.retention_max_idle, c.retention_max_messages
FROM conversations AS c
WHERE (c.updated_at, c.id) > (:after_at, :after_id)
    AND (c.updated_at, c.id) < (:before_at, :before_id)
    AND NOT EXISTS (
        SELECT 1 FROM temp.filter_labels AS w
        WHERE NOT EXISTS (
            SELECT 1 FROM conversation_labels AS l
            WHERE l.conversation_id = c.id AND l.key = w.key AND l.value = w.value
        )
    )
ORDER BY c.updated_at, c.id LIMIT :limit

-- name: conversations_by_label
-- A page of ListConversations with a filter one of whose labels (the
-- driver) few conversations carry: those are read from
-- conversation_labels_by_value and sorted, keeping the ones that carry
-- every label, newest first (newest_first true) or oldest first (the
-- sort runs anyway: one query serves both orders). CROSS JOIN keeps that
-- order of the tables.
SELECT c.id, c.message_count, c.updated_at, c.tail_position, c.layout_version, c.version,
       c.created_at, c.title, c.has_retention, c.retention_max_idle, c.retention_max_messages
FROM conversation_labels AS d
CROSS JOIN conversations AS c ON c.id = d.conversation_id
WHERE d.key = :driver_key AND d.value = :driver_value
    AND (c.updated_at, c.id) > (:after_at, :after_id)
    AND (c.updated_at, c.id) < (:before_at, :before_id)
    AND NOT EXISTS (
        SELECT 1 FROM temp.filter_labels AS w
        WHERE NOT EXISTS (
            SELECT 1 FROM conversation_labels AS l
            WHERE l.conversation_id = c.id AND l.key = w.key AND l.value = w.value
        )
    )
ORDER BY CASE WHEN :newest_first THEN c.updated_at END DESC,
    CASE WHEN :newest_first THEN c.id END DESC,
    c.updated_at, c.id
LIMIT :limit

-- name: label_matches
-- How many conversations carry each label of a filter, counted up to
-- a cap: a page is driven from the rarest label, or walks the
-- order when each is common (transactions.Read.conversation_page).
SELECT w.key, (
    SELECT count(*) FROM (
        SELECT 1 FROM conversation_labels AS l
        WHERE l.key = w.key AND l.value = w.value LIMIT :cap
    ) AS carrying
)
FROM temp.filter_labels AS w

-- name: save_record
-- A conversation's whole row (its labels: clear_labels, insert_labels).
UPDATE conversations
SET message_count = :count, updated_at = :updated_at, tail_position = :tail,
    layout_version = :layout, version = :version, created_at = :created_at,
    title = :title, has_retention = :has_retention,
    retention_max_idle = :max_idle, retention_max_messages = :max_messages
WHERE id = :conversation

-- name: clear_labels
DELETE FROM conversation_labels WHERE conversation_id = :conversation

-- name: insert_labels
-- One row per call (executemany).
INSERT INTO conversation_labels (conversation_id, key, value) VALUES (:conversation, :key, :value)

-- name: conversation_contents
-- What erasing the conversation removes: its messages (detached ones too)
-- and its snapshots.
SELECT (SELECT count(*) FROM messages WHERE conversation_id = :conversation),
       (SELECT count(*) FROM snapshots WHERE conversation_id = :conversation)

-- name: erase_frozen_messages
-- Erasure of locked conversations, one conversation per call
-- (executemany): one for DeleteConversation, many for the retention
-- sweeper. Frozen copies refer to no conversation row, so they go by hand.
DELETE FROM snapshot_messages WHERE conversation_id = :erased

-- name: erase_frozen_bodies
-- One conversation per call (executemany).
DELETE FROM snapshot_bodies WHERE conversation_id = :erased

-- name: erase_conversations
-- One conversation per call (executemany). Every other table of a
-- conversation refers to its row ON DELETE CASCADE (foreign_keys is on for
-- every connection): messages, renumberings, snapshots, idempotency keys,
-- labels and the state of its scope go with it, in this statement.
DELETE FROM conversations WHERE id = :erased


-- State scoped to an app, a user or a conversation (the companion API) -------------------

-- name: scoped_state
SELECT values_json, version FROM scoped_state WHERE scope = :scope

-- name: hold_conversations
-- Of the named conversations (packed ids), those that exist, in the order
-- of their ids; the write lock keeps them until the transaction ends.
WITH RECURSIVE wanted (n, id) AS (
    SELECT 1, substr(:packed, 1, 16) WHERE length(:packed) >= 16
    UNION ALL
    SELECT n + 1, substr(:packed, n * 16 + 1, 16) FROM wanted WHERE n * 16 < length(:packed)
)
SELECT c.id FROM wanted JOIN conversations c ON c.id = wanted.id
ORDER BY c.id

-- name: create_scopes
-- One row per call (executemany): the scope's row at the empty state
-- (version 0), unless it exists.
INSERT OR IGNORE INTO scoped_state (scope, conversation_id, values_json, version)
VALUES (:scope, :owner, x'7b7d', 0)

-- name: lock_scopes
-- The named scopes' rows (a JSON array of their keys); begin_write holds
-- the lock.
SELECT scope, values_json, version FROM scoped_state
WHERE scope IN (SELECT value FROM json_each(:scopes))
ORDER BY scope

-- name: save_states
-- One row per call (executemany).
UPDATE scoped_state SET values_json = :values_json, version = :version WHERE scope = :scope


-- Retention (the sweeper) ------------------------------------------------------------------
--
-- One writer at a time: begin_write holds every conversation a query
-- returns until the batch ends (PostgreSQL skips those others hold).

-- name: idle_by_own_retention
-- Conversations with a retention of their own (the partial index
-- conversations_own_retention) not updated for longer than its max_idle
-- (0: kept forever) at `now`.
SELECT id FROM conversations
WHERE has_retention AND retention_max_idle > 0 AND :now - updated_at > retention_max_idle
LIMIT :limit

-- name: idle_by_default
-- Conversations under the server's default retention not updated since
-- `cutoff`, oldest first: a range scan of conversations_by_update.
SELECT id FROM conversations
WHERE updated_at < :cutoff AND NOT has_retention
ORDER BY updated_at, id
LIMIT :limit

-- name: overlong_by_own_retention
-- Conversations with a retention of their own holding more messages than
-- its max_messages (0: no limit), with that limit.
SELECT id, message_count, retention_max_messages FROM conversations
WHERE has_retention AND retention_max_messages > 0 AND message_count > retention_max_messages
LIMIT :limit

-- name: overlong_by_default
-- Conversations under the server's default retention holding more than
-- `max_messages` (reads the table of conversations, see PostgreSQL's).
SELECT id, message_count FROM conversations
WHERE NOT has_retention AND message_count > :max_messages
LIMIT :limit

-- name: trim_messages
-- One conversation per call (executemany): its `count` oldest entries
-- leave the ordering and their messages are deleted, as
-- DeleteConversationMessagesRange deletes.
DELETE FROM messages
WHERE conversation_id = :trimmed AND position IN (
    SELECT position FROM messages
    WHERE conversation_id = :trimmed AND position IS NOT NULL
    ORDER BY position LIMIT :count
)

-- name: shorten_conversations
-- One conversation per call (executemany): version + 1, updated_at stays
-- (see PostgreSQL's).
UPDATE conversations SET message_count = message_count - :count, version = version + 1
WHERE id = :trimmed


-- Reading and forking the ordering (the companion API) ------------------------------------

-- name: entry_sizes
-- Of the named messages (packed ids), those in the conversation's
-- ordering, with the size of their encoding (length() of a blob column
-- reads its size, not the blob): GetMessages checks the response limit
-- before any entry is read.
WITH RECURSIVE wanted (n, id) AS (
    SELECT 1, substr(:packed, 1, 16) WHERE length(:packed) >= 16
    UNION ALL
    SELECT n + 1, substr(:packed, n * 16 + 1, 16) FROM wanted WHERE n * 16 < length(:packed)
)
SELECT m.id, length(m.entry)
FROM wanted
JOIN messages m ON m.conversation_id = :conversation AND m.id = wanted.id
WHERE m.position IS NOT NULL

-- name: entries_of
-- The encodings of the named messages (packed ids) of the conversation's
-- ordering.
WITH RECURSIVE wanted (n, id) AS (
    SELECT 1, substr(:packed, 1, 16) WHERE length(:packed) >= 16
    UNION ALL
    SELECT n + 1, substr(:packed, n * 16 + 1, 16) FROM wanted WHERE n * 16 < length(:packed)
)
SELECT m.id, m.entry
FROM wanted
JOIN messages m ON m.conversation_id = :conversation AND m.id = wanted.id
WHERE m.position IS NOT NULL

-- name: snapshots_after
-- A page of ListConversationSnapshots: the conversation's snapshots after
-- a key (created_at, id), oldest first; one range scan of
-- snapshots_by_creation.
SELECT id, created_at, item_count FROM snapshots
WHERE conversation_id = :conversation AND (created_at, id) > (:after_at, :after_id)
ORDER BY created_at, id LIMIT :limit

-- name: hold_conversation
-- The row of the conversation a fork copies. The write transaction holds
-- the database's one write lock, so nothing changes it meanwhile.
SELECT message_count, updated_at, tail_position, layout_version, version
FROM conversations WHERE id = :conversation

-- name: originals
-- A batch of the messages a fork copies: entries of the ordering of a held
-- conversation with after < position <= last, in order, each with all of
-- its message but the body, which copy_messages copies in the database.
SELECT position, id, role, kind, body_length, created_at FROM messages
WHERE conversation_id = :conversation AND position > :after AND position <= :last
ORDER BY position LIMIT :limit

-- name: copy_messages
-- One row per call (executemany). A copy of a message of a held
-- conversation (source) into this one, under its new id at its new
-- position: its entry is its own head and tail around the body cut out of
-- the original's entry (as freeze_messages cuts it), so that bodies never
-- leave the database.
INSERT INTO messages (conversation_id, id, position, role, kind, entry, body_offset,
    body_length, body_sha256, created_at)
SELECT :conversation, :id, :position, role, kind,
    CAST(:head || substr(entry, body_offset + 1, body_length) || :tail AS BLOB),
    length(:head), body_length, body_sha256, created_at
FROM messages WHERE conversation_id = :source AND id = :original


-- Checkpoints (agentstate.v1.CheckpointsService) ----------------------------------------
--
-- As in the PostgreSQL file: text keys stored as their UTF-8 bytes (BLOB,
-- compared with memcmp), lists of keys as one JSON array (CAST to BLOB,
-- which keeps the UTF-8 bytes), digests packed 32 bytes each. The write
-- lock holds threads; there is nothing else to lock.

-- name: create_thread
INSERT OR IGNORE INTO checkpoint_threads (thread_id, erased_through) VALUES (:thread, x'')

-- name: hold_thread
SELECT erased_through FROM checkpoint_threads WHERE thread_id = :thread

-- name: lock_threads
SELECT thread_id, erased_through FROM checkpoint_threads
WHERE thread_id IN (SELECT CAST(value AS BLOB) FROM json_each(:threads))
ORDER BY thread_id

-- name: stored_checkpoints
SELECT checkpoint_id FROM checkpoints
WHERE thread_id = :thread AND checkpoint_ns = :ns
    AND checkpoint_id IN (SELECT CAST(value AS BLOB) FROM json_each(:ids))

-- name: insert_blobs
-- One row per call (executemany); an item already there stays.
INSERT OR IGNORE INTO checkpoint_blobs (thread_id, sha256, type, data)
VALUES (:thread, :sha256, :type, :data)

-- name: insert_values
-- One row per call (executemany); a version already stored stays.
INSERT OR IGNORE INTO checkpoint_values (thread_id, checkpoint_ns, channel, version, is_list,
    base_version, depth, length, list_sha256, items)
VALUES (:thread, :ns, :channel, :version, :is_list, :base_version, :depth, :length,
    :list_sha256, :items)

-- name: value_heads
SELECT json_extract(k.value, '$[0]'), json_extract(k.value, '$[1]'),
    json_extract(k.value, '$[2]'), v.is_list, v.depth, v.length, v.list_sha256
FROM json_each(:wanted) AS k
JOIN checkpoint_values AS v ON v.thread_id = :thread
    AND v.checkpoint_ns = CAST(json_extract(k.value, '$[0]') AS BLOB)
    AND v.channel = CAST(json_extract(k.value, '$[1]') AS BLOB)
    AND v.version = CAST(json_extract(k.value, '$[2]') AS BLOB)

-- name: put_checkpoint
INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
    checkpoint_type, checkpoint, metadata, channel_versions, run_id)
VALUES (:thread, :ns, :checkpoint, :parent, :type, :data, :metadata, :versions, :run)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE
SET parent_checkpoint_id = excluded.parent_checkpoint_id,
    checkpoint_type = excluded.checkpoint_type, checkpoint = excluded.checkpoint,
    metadata = excluded.metadata, channel_versions = excluded.channel_versions,
    run_id = excluded.run_id

-- name: put_writes
-- One write per call (executemany): one with idx >= 0 already stored
-- stays, a special one (negative idx) replaces it.
INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
    task_path, channel, is_list, items)
VALUES (:thread, :ns, :checkpoint, :task, :idx, :task_path, :channel, :is_list, :items)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
SET task_path = excluded.task_path, channel = excluded.channel, is_list = excluded.is_list,
    items = excluded.items
WHERE excluded.idx < 0

-- name: latest_checkpoint
SELECT checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint, metadata,
    channel_versions
FROM checkpoints WHERE thread_id = :thread AND checkpoint_ns = :ns
ORDER BY checkpoint_id DESC LIMIT 1

-- name: checkpoint
SELECT checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint, metadata,
    channel_versions
FROM checkpoints
WHERE thread_id = :thread AND checkpoint_ns = :ns AND checkpoint_id = :checkpoint

-- name: namespace_checkpoints
SELECT checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint, metadata,
    channel_versions
FROM checkpoints
WHERE thread_id = :thread AND checkpoint_ns = :ns AND checkpoint_id < :below_id
ORDER BY checkpoint_id DESC LIMIT :limit

-- name: thread_checkpoints_page
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint,
    metadata, channel_versions
FROM checkpoints
WHERE thread_id = :thread AND (checkpoint_id, checkpoint_ns) < (:below_id, :below_ns)
ORDER BY checkpoint_id DESC, checkpoint_ns DESC LIMIT :limit

-- name: every_checkpoint_page
SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type,
    checkpoint, metadata, channel_versions
FROM checkpoints
WHERE (checkpoint_id, checkpoint_ns, thread_id) < (:below_id, :below_ns, :below_thread)
    AND (:any_ns OR checkpoint_ns = :ns)
ORDER BY checkpoint_id DESC, checkpoint_ns DESC, thread_id DESC LIMIT :limit

-- name: value_chains
-- The named values and the chains of values they extend (see the
-- PostgreSQL file).
WITH RECURSIVE wanted AS (
    SELECT CAST(json_extract(value, '$[0]') AS BLOB) AS thread_id,
        CAST(json_extract(value, '$[1]') AS BLOB) AS ns,
        CAST(json_extract(value, '$[2]') AS BLOB) AS channel,
        CAST(json_extract(value, '$[3]') AS BLOB) AS version
    FROM json_each(:wanted)
), chain AS (
    SELECT w.thread_id, w.ns, w.channel, w.version AS head, 0 AS depth, v.is_list,
        v.base_version, v.items
    FROM wanted AS w
    JOIN checkpoint_values AS v ON v.thread_id = w.thread_id AND v.checkpoint_ns = w.ns
        AND v.channel = w.channel AND v.version = w.version
    UNION ALL
    SELECT c.thread_id, c.ns, c.channel, c.head, c.depth + 1, v.is_list, v.base_version,
        v.items
    FROM chain AS c
    JOIN checkpoint_values AS v ON v.thread_id = c.thread_id AND v.checkpoint_ns = c.ns
        AND v.channel = c.channel AND v.version = c.base_version
)
SELECT thread_id, ns, channel, head, depth, is_list, items FROM chain

-- name: pending_writes
SELECT w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.task_path, w.idx,
    w.channel, w.is_list, w.items
FROM json_each(:wanted) AS k
JOIN checkpoint_writes AS w ON w.thread_id = CAST(json_extract(k.value, '$[0]') AS BLOB)
    AND w.checkpoint_ns = CAST(json_extract(k.value, '$[1]') AS BLOB)
    AND w.checkpoint_id = CAST(json_extract(k.value, '$[2]') AS BLOB)
ORDER BY w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_path, w.task_id, w.idx

-- name: blobs_of
WITH RECURSIVE wanted (n, sha256) AS (
    SELECT 1, substr(:packed, 1, 32) WHERE length(:packed) >= 32
    UNION ALL
    SELECT n + 1, substr(:packed, n * 32 + 1, 32) FROM wanted WHERE n * 32 < length(:packed)
)
SELECT b.sha256, b.type, b.data
FROM wanted JOIN checkpoint_blobs AS b ON b.thread_id = :thread AND b.sha256 = wanted.sha256

-- name: greatest_ids
SELECT (SELECT checkpoint_id FROM checkpoints WHERE thread_id = :thread
        ORDER BY checkpoint_id DESC LIMIT 1),
    (SELECT checkpoint_id FROM checkpoint_writes WHERE thread_id = :thread
        ORDER BY checkpoint_id DESC LIMIT 1)

-- name: count_checkpoints
SELECT count(*) FROM checkpoints WHERE thread_id = :thread

-- name: erase_checkpoints
DELETE FROM checkpoints WHERE thread_id = :thread

-- name: erase_values
DELETE FROM checkpoint_values WHERE thread_id = :thread

-- name: erase_writes
DELETE FROM checkpoint_writes WHERE thread_id = :thread

-- name: erase_blobs
DELETE FROM checkpoint_blobs WHERE thread_id = :thread

-- name: mark_erased
UPDATE checkpoint_threads SET erased_through = :erased WHERE thread_id = :thread

-- name: copy_checkpoints
INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
    checkpoint_type, checkpoint, metadata, channel_versions, run_id)
SELECT :target, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type,
    checkpoint, metadata, channel_versions, run_id
FROM checkpoints WHERE thread_id = :source

-- name: copy_values
INSERT INTO checkpoint_values (thread_id, checkpoint_ns, channel, version, is_list,
    base_version, depth, length, list_sha256, items)
SELECT :target, checkpoint_ns, channel, version, is_list, base_version, depth, length,
    list_sha256, items
FROM checkpoint_values WHERE thread_id = :source

-- name: copy_writes
INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
    task_path, channel, is_list, items)
SELECT :target, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, is_list,
    items
FROM checkpoint_writes WHERE thread_id = :source

-- name: copy_blobs
INSERT INTO checkpoint_blobs (thread_id, sha256, type, data)
SELECT :target, sha256, type, data FROM checkpoint_blobs WHERE thread_id = :source

-- name: thread_checkpoints
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, channel_versions, run_id
FROM checkpoints WHERE thread_id = :thread

-- name: run_checkpoints
SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints
WHERE run_id IN (SELECT CAST(value AS BLOB) FROM json_each(:runs))

-- name: delete_checkpoints
-- One checkpoint per call (executemany).
DELETE FROM checkpoints
WHERE thread_id = :thread AND checkpoint_ns = :ns AND checkpoint_id = :checkpoint

-- name: delete_checkpoint_writes
-- One checkpoint per call (executemany).
DELETE FROM checkpoint_writes
WHERE thread_id = :thread AND checkpoint_ns = :ns AND checkpoint_id = :checkpoint

-- name: orphan_children
UPDATE checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = :thread AND parent_checkpoint_id IS NOT NULL
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints AS p
        WHERE p.thread_id = checkpoints.thread_id AND p.checkpoint_ns = checkpoints.checkpoint_ns
            AND p.checkpoint_id = checkpoints.parent_checkpoint_id
    )

-- name: thread_values
SELECT checkpoint_ns, channel, version, base_version, items
FROM checkpoint_values WHERE thread_id = :thread

-- name: thread_write_items
SELECT items FROM checkpoint_writes WHERE thread_id = :thread

-- name: thread_blob_digests
SELECT sha256 FROM checkpoint_blobs WHERE thread_id = :thread

-- name: delete_values
-- One value per call (executemany).
DELETE FROM checkpoint_values
WHERE thread_id = :thread AND checkpoint_ns = :ns AND channel = :channel AND version = :version

-- name: delete_blobs
-- One blob per call (executemany).
DELETE FROM checkpoint_blobs WHERE thread_id = :thread AND sha256 = :sha256


-- Migrations ----------------------------------------------------------------------------

-- name: create_schema_migrations
-- The record of applied migrations (see migrations/__init__.py); the
-- migrations themselves never create it.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)

-- name: schema_migrations_exists
SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')

-- name: applied_migrations
SELECT version, checksum FROM schema_migrations

-- name: record_migration
INSERT INTO schema_migrations (version, name, checksum, applied_at)
VALUES (:version, :name, :checksum, :applied_at)


-- only in this dialect

-- name: keep_append_key
-- A keyed append's key, kept in append_at_tail's transaction (PostgreSQL
-- keeps it in append_at_tail's one statement). It fails on a key the
-- conversation already has (recent or expired): the caller rolls back and
-- takes the locked path, which replays or replaces it.
INSERT INTO idempotency_keys
    (conversation_id, key, fingerprint, response, created_at, message_count)
VALUES (:conversation, :key, :fingerprint, :response, :updated_at, :message_count)

-- name: message_page
-- (PostgreSQL: conversation_and_message_page.) Ordered entries after a
-- position, each with its stored encoding: one range scan of
-- messages_ordering. The cursor is read lazily and the byte budget applied
-- as rows arrive (common.budgeted_page), so no body past the row that ends
-- the page is read. A filter that is off matches everything; one that is
-- on reads its staged table.
SELECT position, entry FROM messages
WHERE conversation_id = :conversation AND position > :after
    AND (NOT :by_role OR role IN (SELECT role FROM temp.filter_roles))
    AND (NOT :by_kind OR kind IN (SELECT kind FROM temp.filter_kinds))
ORDER BY position LIMIT :limit

-- name: tail_page
-- (PostgreSQL: conversation_and_tail_page.) The last entries of the
-- ordering that match the filters, newest first, each with its stored
-- encoding: one range scan of messages_ordering backwards, read lazily
-- under the byte budget as message_page is.
SELECT position, entry FROM messages
WHERE conversation_id = :conversation AND position IS NOT NULL
    AND (NOT :by_role OR role IN (SELECT role FROM temp.filter_roles))
    AND (NOT :by_kind OR kind IN (SELECT kind FROM temp.filter_kinds))
ORDER BY position DESC LIMIT :limit

-- name: freeze_body
-- One message freeze_messages returned per call (executemany): keeps its
-- body, once per conversation (PostgreSQL does both in freeze_messages).
INSERT OR IGNORE INTO snapshot_bodies (conversation_id, sha256, body)
SELECT conversation_id, body_sha256, substr(entry, body_offset + 1, body_length) FROM messages
WHERE conversation_id = :conversation AND id = :id

-- name: configure_connection
-- Run once on each new connection (executescript: no parameters, several
-- statements). FULL synchronous: a commit the client saw survives power
-- loss, not only a crash. The temporary tables hold the list filters of
-- message_page and of ListConversations, private to the connection.
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
CREATE TEMP TABLE IF NOT EXISTS filter_roles (role INTEGER PRIMARY KEY);
CREATE TEMP TABLE IF NOT EXISTS filter_kinds (kind BLOB PRIMARY KEY);
CREATE TEMP TABLE IF NOT EXISTS filter_labels (key TEXT PRIMARY KEY, value BLOB NOT NULL);

-- name: clear_filter_roles
DELETE FROM temp.filter_roles

-- name: clear_filter_kinds
DELETE FROM temp.filter_kinds

-- name: stage_filter_role
-- One row per call (executemany).
INSERT INTO temp.filter_roles (role) VALUES (:role)

-- name: stage_filter_kind
-- One row per call (executemany).
INSERT INTO temp.filter_kinds (kind) VALUES (:kind)

-- name: clear_filter_labels
DELETE FROM temp.filter_labels

-- name: stage_filter_label
-- One row per call (executemany).
INSERT INTO temp.filter_labels (key, value) VALUES (:key, :value)
