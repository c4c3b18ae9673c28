"""Every SQL statement of the SQLite memory archive, by name.

The PostgreSQL archive uses the same names for the same intentions. Times are
INTEGER microseconds since the epoch (UTC). `:match` is an FTS5 query built by
`sessiongate.store.sqlite.archive.match_query` from quoted words only, and is
always bound as a parameter.
"""

from __future__ import annotations

STAGE_TURN = """
INSERT INTO memory_staged (session_id, seq, user_id, role, text, created_at)
VALUES (:session_id, :seq, :user_id, :role, :text, :created_at)
ON CONFLICT (session_id, seq) DO NOTHING"""

STAGED_TURNS = """
SELECT seq, role, text, created_at FROM memory_staged
WHERE session_id = :session_id AND seq BETWEEN :first_seq AND :last_seq
ORDER BY seq"""

COUNT_STAGED = "SELECT count(*) AS staged FROM memory_staged WHERE session_id = :session_id"

RELEASE_STAGED = "DELETE FROM memory_staged WHERE session_id = :session_id AND seq <= :upto_seq"

HAS_EPOCH = """
SELECT 1 FROM memory_items
WHERE kind = 'archive' AND session_id = :session_id AND epoch = :epoch
  AND first_seq = :first_seq AND last_seq = :last_seq"""

# An earlier attempt at this epoch with another range was never recorded as committed:
# its archive and facts give way to this one.
DROP_OTHER_ATTEMPT = """
DELETE FROM memory_items
WHERE session_id = :session_id AND epoch = :epoch
  AND NOT EXISTS (
      SELECT 1 FROM memory_items AS done
      WHERE done.kind = 'archive' AND done.session_id = :session_id AND done.epoch = :epoch
        AND done.first_seq = :first_seq AND done.last_seq = :last_seq)"""

INSERT_ARCHIVE = """
INSERT INTO memory_items (
    kind, user_id, owner, platform, session_id, epoch, first_seq, last_seq, text, created_at)
VALUES ('archive', :user_id, :owner, :platform, :session_id, :epoch, :first_seq, :last_seq,
        :text, :created_at)
ON CONFLICT DO NOTHING"""

INSERT_FACT = """
INSERT INTO memory_items (
    kind, user_id, owner, platform, session_id, epoch, first_seq, last_seq, text, created_at)
VALUES ('fact', :user_id, :owner, :platform, :session_id, :epoch, :first_seq, :last_seq,
        :text, :created_at)"""

# bm25() is lower for a better match; the owner column weighs nothing in it. The
# `user_id` condition is the strict scope; the owner token in `:match` only narrows
# the index scan to that user's rows.
SEARCH = """
SELECT item.kind, item.session_id, item.text, item.created_at,
       bm25(memory_index, 1.0, 0.0) AS rank
FROM memory_index JOIN memory_items AS item ON item.id = memory_index.rowid
WHERE memory_index MATCH :match
  AND item.user_id = :user_id
  AND (:platform IS NULL OR item.platform = :platform)
  AND (:exclude IS NULL OR item.session_id <> :exclude)
ORDER BY rank, item.created_at DESC, item.id DESC
LIMIT :limit"""

FORGET_USER_ITEMS = "DELETE FROM memory_items WHERE user_id = :user_id"
FORGET_USER_STAGED = "DELETE FROM memory_staged WHERE user_id = :user_id"
FORGET_SESSION_ITEMS = "DELETE FROM memory_items WHERE session_id = :session_id"
FORGET_SESSION_STAGED = "DELETE FROM memory_staged WHERE session_id = :session_id"
