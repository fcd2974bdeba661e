-- The checkpoint store, as in the PostgreSQL schema (see its comments):
-- text keys are their UTF-8 bytes (BLOB, compared with memcmp), is_list 0
-- or 1.

CREATE TABLE checkpoint_threads (
    thread_id      BLOB PRIMARY KEY,
    erased_through BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    thread_id            BLOB NOT NULL,
    checkpoint_ns        BLOB NOT NULL,
    checkpoint_id        BLOB NOT NULL,
    parent_checkpoint_id BLOB,
    checkpoint_type      BLOB NOT NULL,
    checkpoint           BLOB NOT NULL,
    metadata             BLOB NOT NULL,
    channel_versions     BLOB NOT NULL,
    run_id               BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX checkpoints_by_run ON checkpoints (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE checkpoint_values (
    thread_id     BLOB    NOT NULL,
    checkpoint_ns BLOB    NOT NULL,
    channel       BLOB    NOT NULL,
    version       BLOB    NOT NULL,
    is_list       INTEGER NOT NULL,
    base_version  BLOB,
    depth         INTEGER NOT NULL,
    length        INTEGER NOT NULL,
    list_sha256   BLOB    NOT NULL,
    items         BLOB    NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
) WITHOUT ROWID;

CREATE TABLE checkpoint_blobs (
    thread_id BLOB NOT NULL,
    sha256    BLOB NOT NULL,
    type      BLOB NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (thread_id, sha256)
);

CREATE TABLE checkpoint_writes (
    thread_id     BLOB    NOT NULL,
    checkpoint_ns BLOB    NOT NULL,
    checkpoint_id BLOB    NOT NULL,
    task_id       BLOB    NOT NULL,
    idx           INTEGER NOT NULL,
    task_path     BLOB    NOT NULL,
    channel       BLOB    NOT NULL,
    is_list       INTEGER NOT NULL,
    items         BLOB    NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
) WITHOUT ROWID;
