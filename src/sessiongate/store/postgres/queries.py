"""Every SQL statement of the PostgreSQL store, named by what it does.

Parameters are `%(name)s`. Names match the SQLite store's queries where the
operation is the same. State changes are compare-and-set in the statement
itself; claims lock with `FOR UPDATE SKIP LOCKED` so replicas never wait on
each other's rows.
"""

from __future__ import annotations

# --- connection and schema ------------------------------------------------------------

SET_UTC = "SET TIME ZONE 'UTC'"

# Serializes migrations across replicas for the length of one transaction.
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(hashtext('sessiongate:migrate'))"

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)
"""

SCHEMA_MIGRATIONS_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL AS present"

SCHEMA_VERSION = "SELECT coalesce(max(version), 0) AS version FROM schema_migrations"

RECORD_MIGRATION = """
INSERT INTO schema_migrations (version, name, applied_at)
VALUES (%(version)s, %(name)s, now())
"""

# --- sessions and routing ------------------------------------------------------------

INSERT_SESSION = """
INSERT INTO sessions (
    id, key, state, parent_id, lineage, title, platform, chat_id, chat_type,
    thread_id, user_id, user_name, created_at, last_activity_at, epoch
) VALUES (
    %(id)s, %(key)s, 'active', %(parent_id)s, %(lineage)s, %(title)s, %(platform)s,
    %(chat_id)s, %(chat_type)s, %(thread_id)s, %(user_id)s, %(user_name)s,
    %(created_at)s, %(last_activity_at)s, %(epoch)s
)
ON CONFLICT (id) DO NOTHING
RETURNING *
"""

GET_SESSION = "SELECT * FROM sessions WHERE id = %(session_id)s"

SESSION_STATE = "SELECT state FROM sessions WHERE id = %(session_id)s"

# Taken before deciding whether a session can be finalized, so that two
# transactions completing its last jobs (or ending it) see each other's writes.
LOCK_SESSION = "SELECT state FROM sessions WHERE id = %(session_id)s FOR UPDATE"

ROUTED_SESSION = """
SELECT s.* FROM routing r JOIN sessions s ON s.id = r.session_id
WHERE r.key = %(key)s
"""

LIST_SESSIONS = """
SELECT * FROM sessions
WHERE (%(key)s::text IS NULL OR key = %(key)s)
  AND (%(user_id)s::text IS NULL OR user_id = %(user_id)s)
  AND (%(chat_id)s::text IS NULL OR chat_id = %(chat_id)s)
  AND (%(platform)s::text IS NULL OR platform = %(platform)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""

SET_TITLE = """
UPDATE sessions SET title = %(title)s WHERE id = %(session_id)s RETURNING *
"""

# Routing is a compare-and-set: the key must be free, or already this session's.
ROUTE_SESSION = """
INSERT INTO routing (key, session_id, updated_at)
VALUES (%(key)s, %(session_id)s, %(at)s)
ON CONFLICT (key) DO UPDATE SET updated_at = EXCLUDED.updated_at
    WHERE routing.session_id = EXCLUDED.session_id
RETURNING session_id
"""

MARK_ENDING = """
UPDATE sessions
SET state = 'ending', end_reason = %(reason)s, end_detail = %(detail)s, ended_at = %(at)s
WHERE id = %(session_id)s AND state = ANY(%(expected)s::text[])
  AND (%(turns)s::bigint IS NULL OR turn_count = %(turns)s::bigint)
RETURNING id
"""

SESSION_STATE_FOR_UPDATE = "SELECT state FROM sessions WHERE id = %(session_id)s FOR UPDATE"

ERASE_LEDGER = "DELETE FROM ledger WHERE session_id = %(session_id)s"

ERASE_CURSORS = "DELETE FROM cursors WHERE session_id = %(session_id)s"

UNROUTE_SESSION = "DELETE FROM routing WHERE session_id = %(session_id)s"

DELETE_SESSION_TIMERS = "DELETE FROM timers WHERE session_id = %(session_id)s"

# An `ending` session with no gating job left that is not done is finalized.
FINALIZE_IF_DONE = """
UPDATE sessions SET state = 'finalized'
WHERE id = %(session_id)s AND state = 'ending'
  AND NOT EXISTS (
      SELECT 1 FROM jobs
      WHERE jobs.session_id = %(session_id)s AND jobs.gates_finalize AND jobs.state <> 'done'
  )
RETURNING id
"""

REOPEN_SESSION = """
UPDATE sessions
SET state = 'active', end_reason = NULL, end_detail = NULL, ended_at = NULL,
    epoch = epoch + 1, last_activity_at = %(at)s
WHERE id = %(session_id)s AND state IN ('ending', 'finalized')
  AND end_reason IS DISTINCT FROM 'forget'
RETURNING *
"""

# --- ledger ----------------------------------------------------------------------------

# Reserves the seqs of a batch: the row lock serializes concurrent appenders.
RESERVE_SEQS = """
UPDATE sessions
SET turn_count = turn_count + %(count)s,
    token_estimate = token_estimate + %(tokens)s,
    last_activity_at = %(at)s
WHERE id = %(session_id)s AND state = 'active'
RETURNING turn_count
"""

# An append in one statement (its own transaction): the fence check (FOR SHARE, as in
# FENCE_HOLDS), the counters and seqs, the rows, and the lease's release if asked. When
# the fence does not hold, or the session takes no entries, it writes nothing.
APPEND_ENTRIES = """
WITH fence AS (
    SELECT 1 AS holds FROM leases
    WHERE key = %(fence_key)s AND token = %(fence_token)s
    FOR SHARE
), reserved AS (
    UPDATE sessions
    SET turn_count = turn_count + %(count)s,
        token_estimate = token_estimate + %(tokens)s,
        last_activity_at = %(at)s
    WHERE id = %(session_id)s AND state = 'active'
      AND (%(fence_key)s::text IS NULL OR EXISTS (SELECT 1 FROM fence))
    RETURNING turn_count
), inserted AS (
    INSERT INTO ledger (
        session_id, seq, role, text, parts, platform_message_id, token_estimate, meta, created_at
    )
    SELECT %(session_id)s, r.turn_count - %(count)s + e.n, e.role, e.text, e.parts::jsonb,
           e.platform_message_id, e.token_estimate, e.meta::jsonb, %(at)s
    FROM reserved r,
         unnest(%(roles)s::text[], %(texts)s::text[], %(parts)s::text[],
                %(message_ids)s::text[], %(token_estimates)s::int[], %(metas)s::text[])
             WITH ORDINALITY AS e(role, text, parts, platform_message_id, token_estimate, meta, n)
), released AS (
    DELETE FROM leases
    WHERE %(release)s AND key = %(fence_key)s AND token = %(fence_token)s
      AND EXISTS (SELECT 1 FROM reserved)
)
SELECT (SELECT turn_count FROM reserved) AS turn_count,
       %(fence_key)s::text IS NULL OR EXISTS (SELECT 1 FROM fence) AS fence_holds
"""

INSERT_ENTRY = """
INSERT INTO ledger (
    session_id, seq, role, text, parts, platform_message_id, token_estimate, meta, created_at
) VALUES (
    %(session_id)s, %(seq)s, %(role)s, %(text)s, %(parts)s::jsonb, %(platform_message_id)s,
    %(token_estimate)s, %(meta)s::jsonb, %(created_at)s
)
"""

LIST_ENTRIES = """
SELECT * FROM ledger
WHERE session_id = %(session_id)s AND seq > %(after_seq)s
  AND (%(upto_seq)s::bigint IS NULL OR seq <= %(upto_seq)s)
ORDER BY seq
LIMIT %(limit)s::bigint
"""

COPY_ENTRIES = """
INSERT INTO ledger (
    session_id, seq, role, text, parts, platform_message_id, token_estimate, meta, created_at
)
SELECT %(session_id)s, seq, role, text, parts, platform_message_id, token_estimate, meta,
       created_at
FROM ledger
WHERE session_id = %(source_id)s AND (%(upto_seq)s::bigint IS NULL OR seq <= %(upto_seq)s)
"""

SET_SESSION_COUNTERS = """
UPDATE sessions
SET turn_count = counts.turns, token_estimate = counts.tokens
FROM (
    SELECT count(*) AS turns, coalesce(sum(token_estimate), 0) AS tokens
    FROM ledger WHERE session_id = %(session_id)s
) AS counts
WHERE sessions.id = %(session_id)s
RETURNING sessions.*
"""

# --- outbox ----------------------------------------------------------------------------

ENQUEUE_JOB = """
INSERT INTO jobs (
    kind, payload, idempotency_key, session_id, ordering_key, gates_finalize, state,
    run_after, created_at, updated_at
) VALUES (
    %(kind)s, %(payload)s::jsonb, %(idempotency_key)s, %(session_id)s, %(ordering_key)s,
    %(gates_finalize)s, 'pending', %(run_after)s, %(at)s, %(at)s
)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""

# Claimable: due and pending, or running with an expired lease; and no earlier
# job of the same ordering key in any state but done. A concurrent claimer's
# locked job is still pending or running in every snapshot, so the later jobs
# of its ordering key stay excluded for everyone.
_CLAIM_JOBS = """
WITH claimed AS (
    UPDATE jobs
    SET state = 'running', lease_owner = %(owner)s, lease_expires_at = %(lease_expires_at)s,
        attempts = attempts + 1, fencing_token = fencing_token + 1, updated_at = %(at)s
    WHERE id IN (
        SELECT j.id FROM jobs j
        WHERE ((j.state = 'pending' AND j.run_after <= %(at)s)
               OR (j.state = 'running' AND j.lease_expires_at <= %(at)s))
          AND (%(kinds)s::text[] IS NULL OR j.kind = ANY(%(kinds)s::text[]))
{lanes}          AND (j.ordering_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM jobs e
              WHERE e.ordering_key = j.ordering_key AND e.id < j.id AND e.state <> 'done'
          ))
        ORDER BY j.run_after, j.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING *
)
SELECT * FROM claimed ORDER BY run_after, id
"""
_SKIP_LANES = """          AND (j.ordering_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM unnest(%(skip_lanes)s::text[]) AS lane
              WHERE left(j.ordering_key, length(lane)) = lane
          ))
"""
CLAIM_JOBS = _CLAIM_JOBS.format(lanes="")
# The same, passing over the jobs of some lanes (most claims pass over none).
CLAIM_JOBS_SKIPPING = _CLAIM_JOBS.format(lanes=_SKIP_LANES)

HEARTBEAT_JOB = """
UPDATE jobs SET lease_expires_at = %(lease_expires_at)s, updated_at = %(at)s
WHERE id = %(job_id)s AND state = 'running' AND fencing_token = %(token)s
RETURNING id
"""

COMPLETE_JOB = """
UPDATE jobs
SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, updated_at = %(at)s
WHERE id = %(job_id)s AND state = 'running' AND fencing_token = %(token)s
RETURNING session_id, gates_finalize
"""

RETRY_JOB = """
UPDATE jobs
SET state = 'pending', run_after = %(run_after)s, last_error = %(error)s,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = %(at)s
WHERE id = %(job_id)s AND state = 'running' AND fencing_token = %(token)s
RETURNING id
"""

BURY_JOB = """
WITH buried AS (
    UPDATE jobs
    SET state = 'dead', last_error = %(error)s, lease_owner = NULL, lease_expires_at = NULL,
        updated_at = %(at)s
    WHERE id = %(job_id)s AND state = 'running' AND fencing_token = %(token)s
    RETURNING *
)
INSERT INTO dead_letters (
    job_id, kind, idempotency_key, payload, session_id, attempts, last_error, died_at
)
SELECT id, kind, idempotency_key, payload, session_id, attempts, last_error, %(at)s
FROM buried
ON CONFLICT (job_id) DO UPDATE SET
    attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, died_at = EXCLUDED.died_at
RETURNING job_id
"""

GET_JOB = "SELECT * FROM jobs WHERE id = %(job_id)s"

LIST_JOBS = """
SELECT * FROM jobs
WHERE (%(session_id)s::text IS NULL OR session_id = %(session_id)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
ORDER BY id
LIMIT %(limit)s
"""

LIST_DEAD_LETTERS = """
SELECT * FROM dead_letters ORDER BY died_at, job_id LIMIT %(limit)s
"""

REDRIVE_JOBS = """
WITH revived AS (
    UPDATE jobs
    SET state = 'pending', attempts = 0, run_after = %(at)s, lease_owner = NULL,
        lease_expires_at = NULL, updated_at = %(at)s
    WHERE state = 'dead' AND (%(job_ids)s::bigint[] IS NULL OR id = ANY(%(job_ids)s::bigint[]))
    RETURNING id
), dropped AS (
    DELETE FROM dead_letters d USING revived r WHERE d.job_id = r.id
)
SELECT count(*) AS revived FROM revived
"""

# Whether a job is dead, and if so whether it gates finalization (which refuses a drop);
# locked, so a concurrent redrive or drop waits for this one.
DEAD_JOB = """
SELECT gates_finalize, session_id FROM jobs WHERE id = %(job_id)s AND state = 'dead' FOR UPDATE
"""

DROP_DEAD_JOB = """
WITH gone AS (
    DELETE FROM jobs WHERE id = %(job_id)s AND state = 'dead' AND NOT gates_finalize
    RETURNING id
)
DELETE FROM dead_letters d USING gone g WHERE d.job_id = g.id
"""

# Jobs blocked behind an earlier unfinished job of their ordering key are left
# out: they cannot run before that job changes.
NEXT_JOB_DUE = """
SELECT min(due) AS due FROM (
    (SELECT j.run_after AS due FROM jobs j
     WHERE j.state = 'pending' AND (j.ordering_key IS NULL OR NOT EXISTS (
         SELECT 1 FROM jobs e
         WHERE e.ordering_key = j.ordering_key AND e.id < j.id AND e.state <> 'done'
     ))
     ORDER BY j.run_after LIMIT 1)
    UNION ALL
    (SELECT j.lease_expires_at AS due FROM jobs j
     WHERE j.state = 'running' AND (j.ordering_key IS NULL OR NOT EXISTS (
         SELECT 1 FROM jobs e
         WHERE e.ordering_key = j.ordering_key AND e.id < j.id AND e.state <> 'done'
     ))
     ORDER BY j.lease_expires_at LIMIT 1)
) AS candidates
"""

JOB_COUNTS = """
SELECT kind, state, count(*) AS n FROM jobs GROUP BY kind, state ORDER BY kind, state
"""

OLDEST_PENDING = "SELECT min(run_after) AS oldest FROM jobs WHERE state = 'pending'"

# --- metrics (Store.stats): aggregates only, never a row per session -------------------

# One snapshot for every aggregate of a scrape, so its figures agree.
STATS_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

STATS_SESSIONS = """
SELECT state, end_reason, count(*) AS n, coalesce(sum(turn_count), 0) AS turns
FROM sessions GROUP BY state, end_reason
"""

STATS_LIVE_DELIVERED = """
SELECT c.provider AS provider, sum(c.delivered_seq) AS delivered
FROM sessions s JOIN cursors c ON c.session_id = s.id
WHERE s.state IN ('active', 'ending')
GROUP BY c.provider
"""

STATS_FAILING_CURSORS = """
SELECT provider, count(*) AS n FROM cursors WHERE last_error IS NOT NULL GROUP BY provider
"""

STATS_DEAD_LETTERS = """
SELECT kind,
       CASE WHEN jsonb_typeof(payload -> 'provider') = 'string'
            THEN payload ->> 'provider' ELSE '' END AS provider,
       count(*) AS n
FROM dead_letters GROUP BY 1, 2
"""

STATS_COMMIT_DELAYS = """
SELECT extract(epoch FROM max(c.last_commit_at) - s.ended_at)::float8 AS delay
FROM sessions s JOIN cursors c ON c.session_id = s.id
WHERE s.state = 'finalized' AND s.ended_at >= %(ended_since)s
GROUP BY s.id, s.ended_at
HAVING max(c.last_commit_at) >= s.ended_at
ORDER BY s.ended_at DESC, s.id DESC
LIMIT %(limit)s
"""

STATS_DATABASE_SIZE = "SELECT pg_database_size(current_database()) AS size"

# --- timers ----------------------------------------------------------------------------

SET_TIMER = """
INSERT INTO timers (session_id, kind, due_at, lease_owner, lease_expires_at)
VALUES (%(session_id)s, %(kind)s, %(due_at)s, NULL, NULL)
ON CONFLICT (session_id, kind) DO UPDATE
SET due_at = EXCLUDED.due_at, lease_owner = NULL, lease_expires_at = NULL
"""

CLAIM_TIMERS = """
WITH due AS (
    SELECT session_id, kind FROM timers
    WHERE due_at <= %(at)s AND (lease_expires_at IS NULL OR lease_expires_at <= %(at)s)
    ORDER BY due_at, session_id, kind
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    -- A join on the primary key, so the update touches only the due rows (an
    -- IN (subquery) here was planned as a scan of every timer).
    UPDATE timers t
    SET lease_owner = %(owner)s, lease_expires_at = %(lease_expires_at)s
    FROM due
    WHERE t.session_id = due.session_id AND t.kind = due.kind
    RETURNING t.*
)
SELECT * FROM claimed ORDER BY due_at, session_id, kind
"""

DELETE_TIMER = """
DELETE FROM timers
WHERE session_id = %(session_id)s AND kind = %(kind)s AND lease_owner = %(owner)s
RETURNING kind
"""

RESCHEDULE_TIMER = """
UPDATE timers SET due_at = %(due_at)s, lease_owner = NULL, lease_expires_at = NULL
WHERE session_id = %(session_id)s AND kind = %(kind)s AND lease_owner = %(owner)s
RETURNING kind
"""

NEXT_TIMER_DUE = "SELECT min(due_at) AS due FROM timers"

LIST_TIMERS = "SELECT * FROM timers WHERE session_id = %(session_id)s ORDER BY kind"

# --- cursors ---------------------------------------------------------------------------

GET_CURSOR = """
SELECT * FROM cursors WHERE provider = %(provider)s AND session_id = %(session_id)s
"""

LIST_CURSORS = "SELECT * FROM cursors WHERE session_id = %(session_id)s ORDER BY provider"

# An absent cursor counts as delivered_seq 0: it is created only when 0 is expected.
ADVANCE_CURSOR = """
WITH moved AS (
    UPDATE cursors
    SET delivered_seq = %(delivered_seq)s, last_error = NULL, updated_at = %(at)s
    WHERE provider = %(provider)s AND session_id = %(session_id)s
      AND delivered_seq = %(expected_seq)s
    RETURNING provider
), created AS (
    INSERT INTO cursors (provider, session_id, delivered_seq, updated_at)
    SELECT %(provider)s, %(session_id)s, %(delivered_seq)s, %(at)s
    WHERE %(expected_seq)s = 0 AND NOT EXISTS (
        SELECT 1 FROM cursors WHERE provider = %(provider)s AND session_id = %(session_id)s
    )
    ON CONFLICT (provider, session_id) DO NOTHING
    RETURNING provider
)
SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM created) AS changed
"""

# An absent cursor counts as commit_epoch 0: it is created only for epoch 1.
RECORD_COMMIT = """
WITH moved AS (
    UPDATE cursors
    SET commit_epoch = %(epoch)s, committed_seq = %(committed_seq)s,
        last_commit_at = %(at)s, last_error = NULL, updated_at = %(at)s
    WHERE provider = %(provider)s AND session_id = %(session_id)s
      AND commit_epoch = %(epoch)s - 1
    RETURNING provider
), created AS (
    INSERT INTO cursors (
        provider, session_id, committed_seq, commit_epoch, last_commit_at, updated_at
    )
    SELECT %(provider)s, %(session_id)s, %(committed_seq)s, %(epoch)s, %(at)s, %(at)s
    WHERE %(epoch)s = 1 AND NOT EXISTS (
        SELECT 1 FROM cursors WHERE provider = %(provider)s AND session_id = %(session_id)s
    )
    ON CONFLICT (provider, session_id) DO NOTHING
    RETURNING provider
)
SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM created) AS changed
"""

NOTE_CURSOR_ERROR = """
INSERT INTO cursors (provider, session_id, last_error, updated_at)
VALUES (%(provider)s, %(session_id)s, %(error)s, %(at)s)
ON CONFLICT (provider, session_id) DO UPDATE
SET last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at
"""
