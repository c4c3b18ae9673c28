"""Every SQL statement of the PostgreSQL memory archive, by name.

Names match the SQLite archive's queries. Parameters are `%(name)s`.
`%(query)s` is made of plain words joined by ` or ` (see
`sessiongate.store.postgres.archive.websearch_text`) and read by
`websearch_to_tsquery`, which never fails on its input.
"""

from __future__ import annotations

STAGE_TURN = """
INSERT INTO memory_staged (session_id, seq, user_id, role, text, created_at)
VALUES (%(session_id)s, %(seq)s, %(user_id)s, %(role)s, %(text)s, %(created_at)s)
ON CONFLICT (session_id, seq) DO NOTHING
"""

STAGED_TURNS = """
SELECT seq, role, text, created_at FROM memory_staged
WHERE session_id = %(session_id)s AND seq BETWEEN %(first_seq)s AND %(last_seq)s
ORDER BY seq
"""

COUNT_STAGED = """
SELECT count(*) AS staged FROM memory_staged WHERE session_id = %(session_id)s
"""

RELEASE_STAGED = """
DELETE FROM memory_staged WHERE session_id = %(session_id)s AND seq <= %(upto_seq)s
"""

HAS_EPOCH = """
SELECT 1 AS found FROM memory_items
WHERE kind = 'archive' AND session_id = %(session_id)s AND epoch = %(epoch)s
  AND first_seq = %(first_seq)s AND last_seq = %(last_seq)s
"""

# Taken first, so two attempts at one epoch run one after the other.
LOCK_EPOCH = "SELECT pg_advisory_xact_lock(hashtext('sessiongate:archive:' || %(session_id)s))"

# An earlier attempt at this epoch with another range was never recorded as committed:
# its archive and facts give way to this one.
DROP_OTHER_ATTEMPT = """
DELETE FROM memory_items
WHERE session_id = %(session_id)s AND epoch = %(epoch)s
  AND NOT EXISTS (
      SELECT 1 FROM memory_items AS done
      WHERE done.kind = 'archive' AND done.session_id = %(session_id)s
        AND done.epoch = %(epoch)s
        AND done.first_seq = %(first_seq)s AND done.last_seq = %(last_seq)s)
"""

INSERT_ARCHIVE = """
INSERT INTO memory_items (
    kind, user_id, platform, session_id, epoch, first_seq, last_seq, text, created_at)
VALUES ('archive', %(user_id)s, %(platform)s, %(session_id)s, %(epoch)s, %(first_seq)s,
        %(last_seq)s, %(text)s, %(created_at)s)
ON CONFLICT (session_id, epoch) WHERE kind = 'archive' DO NOTHING
RETURNING id
"""

INSERT_FACT = """
INSERT INTO memory_items (
    kind, user_id, platform, session_id, epoch, first_seq, last_seq, text, created_at)
VALUES ('fact', %(user_id)s, %(platform)s, %(session_id)s, %(epoch)s, %(first_seq)s,
        %(last_seq)s, %(text)s, %(created_at)s)
"""

# ts_rank with normalization 1 (divided by 1 + the log of the length), so a long
# archive does not outrank a short fact by its size alone.
SEARCH = """
SELECT item.kind, item.session_id, item.text, item.created_at,
       ts_rank(item.search, q.query, 1) AS score
FROM memory_items AS item, websearch_to_tsquery('english', %(query)s) AS q(query)
WHERE item.user_id = %(user_id)s
  AND item.search @@ q.query
  AND (%(platform)s::text IS NULL OR item.platform = %(platform)s::text)
  AND (%(exclude)s::text IS NULL OR item.session_id <> %(exclude)s::text)
ORDER BY score DESC, item.created_at DESC, item.id DESC
LIMIT %(limit)s
"""

FORGET_USER_ITEMS = "DELETE FROM memory_items WHERE user_id = %(user_id)s"
FORGET_USER_STAGED = "DELETE FROM memory_staged WHERE user_id = %(user_id)s"
FORGET_SESSION_ITEMS = "DELETE FROM memory_items WHERE session_id = %(session_id)s"
FORGET_SESSION_STAGED = "DELETE FROM memory_staged WHERE session_id = %(session_id)s"
