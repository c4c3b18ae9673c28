-- The memory archive of the local memory provider (see sessiongate.store.archive).

-- Delivered ledger entries waiting for their epoch's commit, which removes them.
CREATE TABLE memory_staged (
    session_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    user_id    TEXT,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    text       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX memory_staged_user ON memory_staged (user_id);

-- Archived epochs (one per session and epoch) and the facts extracted from them.
CREATE TABLE memory_items (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('archive', 'fact')),
    user_id    TEXT,
    platform   TEXT NOT NULL,
    session_id TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    text       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    search     TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
CREATE UNIQUE INDEX memory_items_epoch ON memory_items (session_id, epoch) WHERE kind = 'archive';
CREATE INDEX memory_items_session ON memory_items (session_id, epoch);
CREATE INDEX memory_items_user ON memory_items (user_id, created_at);
CREATE INDEX memory_items_search ON memory_items USING GIN (search);
