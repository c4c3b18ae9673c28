-- Times are TIMESTAMPTZ; JSON columns are JSONB.
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
    created_at       TIMESTAMPTZ NOT NULL,
    last_activity_at TIMESTAMPTZ NOT NULL,
    ended_at         TIMESTAMPTZ,
    turn_count       BIGINT NOT NULL DEFAULT 0,
    token_estimate   BIGINT NOT NULL DEFAULT 0,
    epoch            BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_key ON sessions (key, created_at);
CREATE INDEX sessions_user_chat ON sessions (user_id, chat_id, created_at);
CREATE INDEX sessions_state ON sessions (state, created_at);

-- One row per session key: the conversation's current session.
CREATE TABLE routing (
    key        TEXT PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    updated_at TIMESTAMPTZ NOT NULL
);

-- The append-only transcript.
CREATE TABLE ledger (
    session_id          TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    text                TEXT NOT NULL,
    parts               JSONB NOT NULL DEFAULT '[]',
    platform_message_id TEXT,
    token_estimate      BIGINT NOT NULL,
    meta                JSONB NOT NULL DEFAULT '{}',
    created_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             TEXT NOT NULL,
    payload          JSONB NOT NULL DEFAULT '{}',
    idempotency_key  TEXT NOT NULL UNIQUE,
    session_id       TEXT,
    ordering_key     TEXT,
    gates_finalize   BOOLEAN NOT NULL DEFAULT FALSE,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    run_after        TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    fencing_token    BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_pending ON jobs (run_after, id) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_ordering ON jobs (ordering_key, id) WHERE state <> 'done';
CREATE INDEX jobs_session ON jobs (session_id, state);

CREATE TABLE dead_letters (
    job_id          BIGINT PRIMARY KEY,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload         JSONB NOT NULL,
    session_id      TEXT,
    attempts        BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    died_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE timers (
    session_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    due_at           TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    PRIMARY KEY (session_id, kind)
);
CREATE INDEX timers_due ON timers (due_at, session_id, kind);

CREATE TABLE cursors (
    provider       TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    delivered_seq  BIGINT NOT NULL DEFAULT 0,
    committed_seq  BIGINT NOT NULL DEFAULT 0,
    commit_epoch   BIGINT NOT NULL DEFAULT 0,
    last_commit_at TIMESTAMPTZ,
    last_error     TEXT,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, session_id)
);
CREATE INDEX cursors_session ON cursors (session_id);
