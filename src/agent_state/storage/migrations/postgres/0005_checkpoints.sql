-- The checkpoint store (agentstate.v1.CheckpointsService): LangGraph's
-- checkpoints, their channel values and pending writes, by thread.
--
-- Every text key (thread, namespace, checkpoint id, channel, version, task,
-- run) is its UTF-8 bytes (bytea): keys compare and sort byte for byte, as
-- LangGraph orders checkpoint ids, whatever the database's collation.
-- Every key leads with thread_id, so a thread's rows can be co-located.

-- One row per thread that was ever written: writers hold it shared, the
-- thread-wide operations lock it. erased_through: the greatest checkpoint
-- id its erasures removed ('' when never erased); a later write belonging
-- to that history is refused, so a deleted thread is not brought back.
CREATE TABLE checkpoint_threads (
    thread_id      bytea PRIMARY KEY,
    erased_through bytea NOT NULL
);

-- checkpoint: the checkpoint without its channel values, as the client
-- serialized it (checkpoint_type names the serialization). metadata: its
-- JSON object's canonical text. channel_versions: a JSON object of the
-- channel versions it reads. run_id: metadata's "run_id" when a string.
CREATE TABLE checkpoints (
    thread_id            bytea NOT NULL,
    checkpoint_ns        bytea NOT NULL,
    checkpoint_id        bytea NOT NULL,
    parent_checkpoint_id bytea,
    checkpoint_type      bytea NOT NULL,
    checkpoint           bytea NOT NULL,
    metadata             bytea NOT NULL,
    channel_versions     bytea NOT NULL,
    run_id               bytea,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
-- DeleteForRuns, over every thread.
CREATE INDEX checkpoints_by_run ON checkpoints (run_id) WHERE run_id IS NOT NULL;

-- A channel's value at a version: the SHA-256 of each item, packed, after
-- the items of the value at base_version (the same channel's list, which
-- this one extends; NULL: the whole value). A list that grows by one item
-- a step so costs 32 bytes a step, not its length. depth: links to a whole
-- value (bounded, so that a read walks few); length: items of the whole
-- list; list_sha256: the SHA-256 of all their digests, so that a put tells
-- whether it extends this list without reading it.
CREATE TABLE checkpoint_values (
    thread_id     bytea   NOT NULL,
    checkpoint_ns bytea   NOT NULL,
    channel       bytea   NOT NULL,
    version       bytea   NOT NULL,
    is_list       boolean NOT NULL,
    base_version  bytea,
    depth         integer NOT NULL,
    length        integer NOT NULL,
    list_sha256   bytea   NOT NULL,
    items         bytea   NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);

-- Each distinct serialized item once per thread, by the SHA-256 of its
-- type, a NUL and its bytes.
CREATE TABLE checkpoint_blobs (
    thread_id bytea NOT NULL,
    sha256    bytea NOT NULL,
    type      bytea NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (thread_id, sha256)
);

-- The writes pending on a checkpoint, by task and index (negative for
-- LangGraph's special writes); items as in checkpoint_values.
CREATE TABLE checkpoint_writes (
    thread_id     bytea   NOT NULL,
    checkpoint_ns bytea   NOT NULL,
    checkpoint_id bytea   NOT NULL,
    task_id       bytea   NOT NULL,
    idx           integer NOT NULL,
    task_path     bytea   NOT NULL,
    channel       bytea   NOT NULL,
    is_list       boolean NOT NULL,
    items         bytea   NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
