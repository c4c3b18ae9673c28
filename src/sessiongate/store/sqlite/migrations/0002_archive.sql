-- The memory archive of the local memory provider (see sessiongate.store.archive).

-- Delivered ledger entries waiting for their epoch's commit, which removes them.
CREATE TABLE memory_staged (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    user_id    TEXT,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    text       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX memory_staged_user ON memory_staged (user_id);

-- Archived epochs (one per session and epoch) and the facts extracted from them.
-- `owner` names `user_id` in the full-text index (a hash; '' for no user), so a
-- search intersects with one user's rows inside the index itself.
CREATE TABLE memory_items (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('archive', 'fact')),
    user_id    TEXT,
    owner      TEXT NOT NULL,
    platform   TEXT NOT NULL,
    session_id TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    text       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX memory_items_epoch ON memory_items (session_id, epoch) WHERE kind = 'archive';
CREATE INDEX memory_items_session ON memory_items (session_id, epoch);
CREATE INDEX memory_items_user ON memory_items (user_id);

-- BM25 over the items' text; the index holds no copy of it (external content).
CREATE VIRTUAL TABLE memory_index USING fts5(
    text,
    owner,
    content = 'memory_items',
    content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER memory_items_indexed AFTER INSERT ON memory_items BEGIN
    INSERT INTO memory_index (rowid, text, owner) VALUES (new.id, new.text, new.owner);
END;

CREATE TRIGGER memory_items_unindexed AFTER DELETE ON memory_items BEGIN
    INSERT INTO memory_index (memory_index, rowid, text, owner)
    VALUES ('delete', old.id, old.text, old.owner);
END;

CREATE TRIGGER memory_items_reindexed AFTER UPDATE ON memory_items BEGIN
    INSERT INTO memory_index (memory_index, rowid, text, owner)
    VALUES ('delete', old.id, old.text, old.owner);
    INSERT INTO memory_index (rowid, text, owner) VALUES (new.id, new.text, new.owner);
END;
