-- Conversation leases: which replica handles a session key now. A row lives while a
-- message is being handled; `token` fences the holder's writes. Tokens come from one
-- counter that never goes back, so a deleted row's token is never handed out again.
CREATE TABLE leases (
    key         TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    token       INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE lease_tokens (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO lease_tokens (id, last) VALUES (1, 0);

-- Retention and the end-to-commit figures walk these instead of whole tables. Each
-- gets its entry once (when a session is finalized, a job done), never on the hot path
-- of a turn (an index on the activity time would be rewritten by every append).
CREATE INDEX sessions_finalized_ended ON sessions (ended_at) WHERE state = 'finalized';
CREATE INDEX jobs_done_updated ON jobs (updated_at) WHERE state = 'done';
CREATE INDEX dead_letters_died ON dead_letters (died_at);
