-- Times are INTEGER microseconds since the Unix epoch, UTC. JSON columns are TEXT.
CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    key              TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('active', 'ending', 'finalized')),
    end_reason       TEXT CHECK (end_reason IN ('new', 'reset', 'idle', 'daily', 'auto_reset',
                         'switch', 'branch', 'compression', 'suspended', 'prune', 'forget', 'admin')),
    end_detail       TEXT,
    parent_id        TEXT,
    lineage          TEXT CHECK (lineage IN ('branch', 'compression', 'resume')),
    title            TEXT,
    platform         TEXT NOT NULL,
    chat_id          TEXT NOT NULL,
    chat_type        TEXT NOT NULL,
    thread_id        TEXT,
    user_id          TEXT,
    user_name        TEXT,
    created_at       INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    ended_at         INTEGER,
    turn_count       INTEGER NOT NULL DEFAULT 0,
    token_estimate   INTEGER NOT NULL DEFAULT 0,
    epoch            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_key ON sessions (key, created_at);
CREATE INDEX sessions_user_chat ON sessions (user_id, chat_id, created_at);
CREATE INDEX sessions_state ON sessions (state, created_at);

-- One row per session key: the conversation's current session.
CREATE TABLE routing (
    key        TEXT PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    updated_at INTEGER NOT NULL
);

-- The append-only transcript.
CREATE TABLE ledger (
    session_id          TEXT NOT NULL,
    seq                 INTEGER NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    text                TEXT NOT NULL,
    parts               TEXT NOT NULL DEFAULT '[]',
    platform_message_id TEXT,
    token_estimate      INTEGER NOT NULL,
    meta                TEXT NOT NULL DEFAULT '{}',
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL DEFAULT '{}',
    idempotency_key  TEXT NOT NULL UNIQUE,
    session_id       TEXT,
    ordering_key     TEXT,
    gates_finalize   INTEGER NOT NULL DEFAULT 0,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_after        INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    fencing_token    INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX jobs_pending ON jobs (run_after, id) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_ordering ON jobs (ordering_key, id) WHERE state <> 'done';
CREATE INDEX jobs_session ON jobs (session_id, state);

CREATE TABLE dead_letters (
    job_id          INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload         TEXT NOT NULL,
    session_id      TEXT,
    attempts        INTEGER NOT NULL,
    last_error      TEXT NOT NULL,
    died_at         INTEGER NOT NULL
);

CREATE TABLE timers (
    session_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    due_at           INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    PRIMARY KEY (session_id, kind)
);
CREATE INDEX timers_due ON timers (due_at, session_id, kind);

CREATE TABLE cursors (
    provider       TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    delivered_seq  INTEGER NOT NULL DEFAULT 0,
    committed_seq  INTEGER NOT NULL DEFAULT 0,
    commit_epoch   INTEGER NOT NULL DEFAULT 0,
    last_commit_at INTEGER,
    last_error     TEXT,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (provider, session_id)
);
CREATE INDEX cursors_session ON cursors (session_id);
