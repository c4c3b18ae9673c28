"""Every SQL statement of the SQLite store, by name.

The PostgreSQL store uses the same names for the same intentions. Times are
INTEGER microseconds since the epoch (UTC); JSON values are TEXT. Variable-length
lists (expected states, kinds, job ids) are passed as one JSON array and read
with `json_each`, so every statement text is fixed; the statements that append
for many sessions at once come in a fixed set of sizes (`TOGETHER_SIZES`).
"""

from __future__ import annotations

# -- connection and schema -------------------------------------------------------------------

PRAGMA_WAL = "PRAGMA journal_mode = WAL"
PRAGMA_SYNCHRONOUS_FULL = "PRAGMA synchronous = FULL"
PRAGMA_SYNCHRONOUS_NORMAL = "PRAGMA synchronous = NORMAL"
PRAGMA_BUSY_TIMEOUT = "PRAGMA busy_timeout = {milliseconds:d}"
PRAGMA_QUERY_ONLY = "PRAGMA query_only = ON"

BEGIN = "BEGIN"
BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
SAVEPOINT = "SAVEPOINT op"
RELEASE_SAVEPOINT = "RELEASE SAVEPOINT op"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT op"

# A write that is always rolled back: it fails at once on a read-only database file.
PROBE_WRITABLE = "CREATE TABLE main.sessiongate_write_probe (x INTEGER)"

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)"""
SCHEMA_MIGRATIONS_EXISTS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
)
SCHEMA_VERSION = "SELECT coalesce(max(version), 0) AS version FROM schema_migrations"
RECORD_MIGRATION = (
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :at)"
)

# -- sessions and routing --------------------------------------------------------------------

SESSION_COLUMNS = """
    id, key, state, end_reason, end_detail, parent_id, lineage, title, platform, chat_id,
    chat_type, thread_id, user_id, user_name, created_at, last_activity_at, ended_at,
    turn_count, token_estimate, epoch"""

INSERT_SESSION = f"""
INSERT INTO sessions ({SESSION_COLUMNS})
VALUES (:id, :key, 'active', NULL, NULL, :parent_id, :lineage, :title, :platform, :chat_id,
        :chat_type, :thread_id, :user_id, :user_name, :created_at, :last_activity_at, NULL,
        :turn_count, :token_estimate, :epoch)"""

GET_SESSION = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = :id"

ROUTED_SESSION = f"""
SELECT {SESSION_COLUMNS} FROM sessions
WHERE id = (SELECT session_id FROM routing WHERE key = :key)"""

# Optional filters: a NULL parameter matches everything. The variants below lead with an
# equality the planner can serve from an index; the store picks the most selective one.
_SESSION_FILTERS = """
  AND (:key IS NULL OR key = :key)
  AND (:user_id IS NULL OR user_id = :user_id)
  AND (:chat_id IS NULL OR chat_id = :chat_id)
  AND (:platform IS NULL OR platform = :platform)
  AND (:state IS NULL OR state = :state)
ORDER BY created_at DESC, id DESC
LIMIT :limit"""

LIST_SESSIONS = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE 1 = 1 {_SESSION_FILTERS}"
LIST_SESSIONS_BY_KEY = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE key = :key {_SESSION_FILTERS}"
LIST_SESSIONS_BY_USER = (
    f"SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = :user_id {_SESSION_FILTERS}"
)
LIST_SESSIONS_BY_STATE = (
    f"SELECT {SESSION_COLUMNS} FROM sessions WHERE state = :state {_SESSION_FILTERS}"
)

ERASE_LEDGER = "DELETE FROM ledger WHERE session_id = :id"

ERASE_CURSORS = "DELETE FROM cursors WHERE session_id = :id"

SET_TITLE = f"UPDATE sessions SET title = :title WHERE id = :id RETURNING {SESSION_COLUMNS}"

SESSION_STATE = "SELECT state, key, turn_count FROM sessions WHERE id = :id"

# Compare-and-set: only from one of the expected states (a JSON array).
MARK_ENDING = """
UPDATE sessions
SET state = 'ending', end_reason = :reason, end_detail = :detail, ended_at = :at
WHERE id = :id AND state IN (SELECT value FROM json_each(:expected))
  AND (:turns IS NULL OR turn_count = :turns)"""

# An ending session with no gating job left that is not done is finalized.
FINALIZE_IF_DONE = """
UPDATE sessions SET state = 'finalized'
WHERE id = :id AND state = 'ending'
  AND NOT EXISTS (
      SELECT 1 FROM jobs
      WHERE jobs.session_id = :id AND jobs.gates_finalize = 1 AND jobs.state <> 'done')"""

REOPEN_SESSION = f"""
UPDATE sessions
SET state = 'active', end_reason = NULL, end_detail = NULL, ended_at = NULL,
    epoch = epoch + 1, last_activity_at = :at
WHERE id = :id AND state IN ('ending', 'finalized') AND end_reason IS NOT 'forget'
RETURNING {SESSION_COLUMNS}"""

ROUTE_OF_KEY = "SELECT session_id FROM routing WHERE key = :key"
INSERT_ROUTE = "INSERT INTO routing (key, session_id, updated_at) VALUES (:key, :session_id, :at)"
UNROUTE_SESSION = "DELETE FROM routing WHERE session_id = :session_id"

# -- ledger ----------------------------------------------------------------------------------

ENTRY_COLUMNS = """
    session_id, seq, role, text, parts, platform_message_id, token_estimate, meta, created_at"""

# Appends that run together (see `sessions.append_together`) count and insert for many
# sessions in one statement. Their texts come in a fixed set of sizes, largest first,
# that every run is split into, so the statement cache keeps them all.
TOGETHER_SIZES = (64, 32, 16, 8, 4, 2, 1)


def _count_entries(sessions: int) -> str:
    # Counts the new entries of active sessions (under the write lock) and returns their new
    # turn_count, the seq of their last entry. A session missing from the result is missing
    # or not active, and nothing was written to it. Rows: (id, count, tokens, at).
    if sessions == 1:  # the common case, and a join of one row costs more than a lookup
        return """
UPDATE sessions
SET turn_count = turn_count + ?2, token_estimate = token_estimate + ?3, last_activity_at = ?4
WHERE id = ?1 AND state = 'active'
RETURNING id, turn_count"""
    values = ", ".join(["(?, ?, ?, ?)"] * sessions)
    return f"""
UPDATE sessions
SET turn_count = turn_count + counted.column2, token_estimate = token_estimate + counted.column3,
    last_activity_at = counted.column4
FROM (VALUES {values}) AS counted
WHERE sessions.id = counted.column1 AND sessions.state = 'active'
RETURNING sessions.id, sessions.turn_count"""


def _insert_entries(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO ledger ({ENTRY_COLUMNS}) VALUES {values}"


COUNT_ENTRIES = {size: _count_entries(size) for size in TOGETHER_SIZES}
INSERT_ENTRIES = {size: _insert_entries(size) for size in TOGETHER_SIZES}

LIST_ENTRIES = f"""
SELECT {ENTRY_COLUMNS} FROM ledger
WHERE session_id = :session_id AND seq > :after_seq AND (:upto_seq IS NULL OR seq <= :upto_seq)
ORDER BY seq
LIMIT coalesce(:limit, -1)"""

COPY_ENTRIES = f"""
INSERT INTO ledger ({ENTRY_COLUMNS})
SELECT :target_id, seq, role, text, parts, platform_message_id, token_estimate, meta, created_at
FROM ledger
WHERE session_id = :source_id AND (:upto_seq IS NULL OR seq <= :upto_seq)"""

LEDGER_TOTALS = """
SELECT count(*) AS turn_count, coalesce(sum(token_estimate), 0) AS token_estimate
FROM ledger WHERE session_id = :session_id"""

SET_SESSION_COUNTERS = """
UPDATE sessions SET turn_count = :turn_count, token_estimate = :token_estimate WHERE id = :id"""

# -- outbox ----------------------------------------------------------------------------------

JOB_COLUMNS = """
    id, kind, payload, idempotency_key, session_id, ordering_key, gates_finalize, state,
    attempts, run_after, lease_owner, lease_expires_at, fencing_token, last_error,
    created_at, updated_at"""

# A duplicate idempotency key is skipped: no row comes back.
ENQUEUE_JOB = """
INSERT INTO jobs (kind, payload, idempotency_key, session_id, ordering_key, gates_finalize,
                  state, attempts, run_after, fencing_token, created_at, updated_at)
VALUES (:kind, :payload, :idempotency_key, :session_id, :ordering_key, :gates_finalize,
        'pending', 0, :run_after, 0, :at, :at)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id"""

# One statement: pick the due jobs whose ordering key has no earlier unfinished job, and
# lease them. The write lock is held from BEGIN IMMEDIATE, so no claimer can interleave.
_CLAIM_JOBS = """
UPDATE jobs
SET state = 'running', lease_owner = :owner, lease_expires_at = :lease_expires_at,
    attempts = attempts + 1, fencing_token = fencing_token + 1, updated_at = :at
WHERE id IN (
    SELECT j.id FROM jobs AS j
    WHERE ((j.state = 'pending' AND j.run_after <= :at)
           OR (j.state = 'running' AND j.lease_expires_at <= :at))
      AND (:kinds IS NULL OR j.kind IN (SELECT value FROM json_each(:kinds)))
{lanes}      AND (j.ordering_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM jobs AS e
          WHERE e.ordering_key = j.ordering_key AND e.id < j.id AND e.state <> 'done'))
    ORDER BY j.run_after, j.id
    LIMIT :limit)
RETURNING {columns}"""
_SKIP_LANES = """      AND (j.ordering_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM json_each(:skip_lanes) AS lane
          WHERE substr(j.ordering_key, 1, length(lane.value)) = lane.value))
"""
CLAIM_JOBS = _CLAIM_JOBS.format(lanes="", columns=JOB_COLUMNS)
# The same, passing over the jobs of some lanes (a separate text: the check costs a little
# for every candidate, and most claims pass over none).
CLAIM_JOBS_SKIPPING = _CLAIM_JOBS.format(lanes=_SKIP_LANES, columns=JOB_COLUMNS)

HEARTBEAT_JOB = """
UPDATE jobs SET lease_expires_at = :lease_expires_at, updated_at = :at
WHERE id = :id AND state = 'running' AND fencing_token = :token"""

COMPLETE_JOB = """
UPDATE jobs
SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, updated_at = :at
WHERE id = :id AND state = 'running' AND fencing_token = :token
RETURNING session_id, gates_finalize"""

RETRY_JOB = """
UPDATE jobs
SET state = 'pending', run_after = :run_after, last_error = :error, lease_owner = NULL,
    lease_expires_at = NULL, updated_at = :at
WHERE id = :id AND state = 'running' AND fencing_token = :token"""

BURY_JOB = f"""
UPDATE jobs
SET state = 'dead', last_error = :error, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = :at
WHERE id = :id AND state = 'running' AND fencing_token = :token
RETURNING {JOB_COLUMNS}"""

INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (job_id, kind, idempotency_key, payload, session_id, attempts,
                          last_error, died_at)
VALUES (:job_id, :kind, :idempotency_key, :payload, :session_id, :attempts, :last_error, :at)
ON CONFLICT (job_id) DO UPDATE
SET attempts = excluded.attempts, last_error = excluded.last_error, died_at = excluded.died_at"""

GET_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id"

_JOB_FILTERS = """
  AND (:session_id IS NULL OR session_id = :session_id)
  AND (:state IS NULL OR state = :state)
  AND (:kind IS NULL OR kind = :kind)
ORDER BY id
LIMIT :limit"""

LIST_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1 {_JOB_FILTERS}"
LIST_JOBS_BY_SESSION = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE session_id = :session_id {_JOB_FILTERS}"
)

LIST_DEAD_LETTERS = """
SELECT job_id, kind, idempotency_key, payload, session_id, attempts, last_error, died_at
FROM dead_letters
ORDER BY died_at, job_id
LIMIT :limit"""

# `:ids` is a JSON array of job ids, or NULL for every dead job.
REDRIVE_JOBS = """
UPDATE jobs
SET state = 'pending', attempts = 0, run_after = :at, lease_owner = NULL,
    lease_expires_at = NULL, updated_at = :at
WHERE state = 'dead' AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))
RETURNING id"""

DELETE_DEAD_LETTERS = """
DELETE FROM dead_letters WHERE job_id IN (SELECT value FROM json_each(:ids))"""

# Whether a job is dead, and if so whether it gates finalization (which refuses a drop).
DEAD_JOB = "SELECT gates_finalize, session_id FROM jobs WHERE id = :id AND state = 'dead'"

DROP_DEAD_JOB = "DELETE FROM jobs WHERE id = :id AND state = 'dead' AND gates_finalize = 0"

DROP_DEAD_LETTER = "DELETE FROM dead_letters WHERE job_id = :id"

# Jobs blocked behind an earlier unfinished job of their ordering key are left out:
# they cannot run before that job changes, so waking for them would only spin.
NEXT_JOB_DUE = """
SELECT min(due) AS due FROM (
    SELECT min(j.run_after) AS due FROM jobs AS j
    WHERE j.state = 'pending' AND (j.ordering_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM jobs AS e
        WHERE e.ordering_key = j.ordering_key AND e.id < j.id AND e.state <> 'done'))
    UNION ALL
    SELECT min(j.lease_expires_at) AS due FROM jobs AS j
    WHERE j.state = 'running' AND (j.ordering_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM jobs AS e
        WHERE e.ordering_key = j.ordering_key AND e.id < j.id AND e.state <> 'done')))"""

JOB_COUNTS = "SELECT kind, state, count(*) AS n FROM jobs GROUP BY kind, state"

OLDEST_PENDING = "SELECT min(run_after) AS oldest FROM jobs WHERE state = 'pending'"

# -- metrics (Store.stats): aggregates only, never a row per session ---------------------------

# One pass over the table: walking the state index instead looks every row up (3.5x slower).
STATS_SESSIONS = """
SELECT state, end_reason, count(*) AS n, coalesce(sum(turn_count), 0) AS turns
FROM sessions NOT INDEXED GROUP BY state, end_reason"""

# Live sessions through the `sessions_state` index, their cursors through `cursors_session`.
STATS_LIVE_DELIVERED = """
SELECT c.provider AS provider, sum(c.delivered_seq) AS delivered
FROM sessions AS s JOIN cursors AS c ON c.session_id = s.id
WHERE s.state IN ('active', 'ending')
GROUP BY c.provider"""

STATS_FAILING_CURSORS = """
SELECT provider, count(*) AS n FROM cursors WHERE last_error IS NOT NULL GROUP BY provider"""

STATS_DEAD_LETTERS = """
SELECT kind,
       CASE WHEN json_type(payload, '$.provider') = 'text'
            THEN json_extract(payload, '$.provider') ELSE '' END AS provider,
       count(*) AS n
FROM dead_letters GROUP BY 1, 2"""

STATS_COMMIT_DELAYS = """
SELECT max(c.last_commit_at) - s.ended_at AS delay
FROM sessions AS s INDEXED BY sessions_finalized_ended JOIN cursors AS c ON c.session_id = s.id
WHERE s.state = 'finalized' AND s.ended_at >= :ended_since
GROUP BY s.id, s.ended_at
HAVING max(c.last_commit_at) >= s.ended_at
ORDER BY s.ended_at DESC, s.id DESC
LIMIT :limit"""

# -- timers ----------------------------------------------------------------------------------

TIMER_COLUMNS = "session_id, kind, due_at, lease_owner, lease_expires_at"

SET_TIMER = """
INSERT INTO timers (session_id, kind, due_at, lease_owner, lease_expires_at)
VALUES (:session_id, :kind, :due_at, NULL, NULL)
ON CONFLICT (session_id, kind) DO UPDATE
SET due_at = excluded.due_at, lease_owner = NULL, lease_expires_at = NULL"""

DELETE_SESSION_TIMERS = "DELETE FROM timers WHERE session_id = :session_id"

# The inner SELECT reads the due timers through the `timers_due` index; ties on due_at
# are broken by session and kind so every store claims the same ones.
CLAIM_TIMERS = f"""
UPDATE timers
SET lease_owner = :owner, lease_expires_at = :lease_expires_at
WHERE (session_id, kind) IN (
    SELECT session_id, kind FROM timers
    WHERE due_at <= :at AND (lease_expires_at IS NULL OR lease_expires_at <= :at)
    ORDER BY due_at, session_id, kind
    LIMIT :limit)
RETURNING {TIMER_COLUMNS}"""

DELETE_TIMER = """
DELETE FROM timers WHERE session_id = :session_id AND kind = :kind AND lease_owner = :owner"""

RESCHEDULE_TIMER = """
UPDATE timers SET due_at = :due_at, lease_owner = NULL, lease_expires_at = NULL
WHERE session_id = :session_id AND kind = :kind AND lease_owner = :owner"""

NEXT_TIMER_DUE = "SELECT min(due_at) AS due FROM timers"

LIST_TIMERS = f"SELECT {TIMER_COLUMNS} FROM timers WHERE session_id = :session_id ORDER BY kind"

# -- cursors ---------------------------------------------------------------------------------

CURSOR_COLUMNS = """
    provider, session_id, delivered_seq, committed_seq, commit_epoch, last_commit_at,
    last_error, updated_at"""

GET_CURSOR = f"""
SELECT {CURSOR_COLUMNS} FROM cursors WHERE provider = :provider AND session_id = :session_id"""

LIST_CURSORS = f"""
SELECT {CURSOR_COLUMNS} FROM cursors WHERE session_id = :session_id ORDER BY provider"""

ADVANCE_CURSOR = """
UPDATE cursors SET delivered_seq = :delivered_seq, last_error = NULL, updated_at = :at
WHERE provider = :provider AND session_id = :session_id AND delivered_seq = :expected_seq"""

# A missing cursor counts as zero: the first advance (from 0) creates it.
INSERT_CURSOR = """
INSERT INTO cursors (provider, session_id, delivered_seq, committed_seq, commit_epoch,
                     last_commit_at, last_error, updated_at)
VALUES (:provider, :session_id, :delivered_seq, :committed_seq, :commit_epoch,
        :last_commit_at, NULL, :at)
ON CONFLICT (provider, session_id) DO NOTHING"""

RECORD_COMMIT = """
UPDATE cursors
SET commit_epoch = :epoch, committed_seq = :committed_seq, last_commit_at = :at,
    last_error = NULL, updated_at = :at
WHERE provider = :provider AND session_id = :session_id AND commit_epoch = :epoch - 1"""

NOTE_CURSOR_ERROR = """
INSERT INTO cursors (provider, session_id, last_error, updated_at)
VALUES (:provider, :session_id, :error, :at)
ON CONFLICT (provider, session_id) DO UPDATE
SET last_error = excluded.last_error, updated_at = excluded.updated_at"""

# -- conversation leases ------------------------------------------------------------------------

NEXT_LEASE_TOKEN = "UPDATE lease_tokens SET last = last + 1 WHERE id = 1 RETURNING last AS token"
ACQUIRE_LEASE = """
INSERT INTO leases (key, owner, token, acquired_at, expires_at)
VALUES (:key, :owner, :token, :at, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    owner = excluded.owner,
    token = excluded.token,
    acquired_at = excluded.acquired_at,
    expires_at = excluded.expires_at
WHERE leases.expires_at <= :at OR leases.owner = :replacing
RETURNING key, owner, token, acquired_at, expires_at
"""
RENEW_LEASE = """
UPDATE leases SET expires_at = :expires_at WHERE key = :key AND token = :token
RETURNING key, owner, token, acquired_at, expires_at
"""
RELEASE_LEASE = "DELETE FROM leases WHERE key = :key AND token = :token"
LEASE_OF = "SELECT key, owner, token, acquired_at, expires_at FROM leases WHERE key = :key"
FENCE_HOLDS = "SELECT 1 FROM leases WHERE key = :key AND token = :token"
FENCES_HOLDING = """
SELECT l.key, l.token FROM leases l
JOIN json_each(:fences) f
  ON l.key = json_extract(f.value, '$[0]') AND l.token = json_extract(f.value, '$[1]')
"""

# Due timers are the only leased ones (a claim takes due timers): the due index finds them.
LEASE_HOLDERS = """
SELECT lease_owner FROM jobs WHERE state = 'running' AND lease_expires_at > :at
UNION SELECT lease_owner FROM timers
      WHERE due_at <= :at AND lease_owner IS NOT NULL AND lease_expires_at > :at
UNION SELECT owner FROM leases WHERE expires_at > :at
"""
EXPIRE_JOB_LEASES = """
UPDATE jobs SET lease_expires_at = :at, updated_at = :at
WHERE state = 'running' AND lease_owner = :owner AND lease_expires_at > :at
"""
EXPIRE_TIMER_LEASES = """
UPDATE timers SET lease_expires_at = :at
WHERE due_at <= :at AND lease_owner = :owner AND lease_expires_at > :at
"""
EXPIRE_KEY_LEASES = "UPDATE leases SET expires_at = :at WHERE owner = :owner AND expires_at > :at"

# -- retention ----------------------------------------------------------------------------------

STALE_SESSIONS = f"""
SELECT {SESSION_COLUMNS} FROM sessions s
WHERE s.state = 'active' AND s.last_activity_at < :idle_before
  AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.key = s.key AND l.expires_at > :at)
ORDER BY s.last_activity_at, s.id
LIMIT :limit
"""
# Finalized long enough ago, nothing of it pending or running (a dead job only once its
# letter is old enough to go too), not being handled, and every named provider has
# received all its turns (a forgotten session has none left).
PRUNABLE_SESSIONS = """
SELECT s.id FROM sessions s INDEXED BY sessions_finalized_ended
WHERE s.state = 'finalized' AND s.ended_at < :ended_before
  AND NOT EXISTS (
      SELECT 1 FROM jobs j WHERE j.session_id = s.id AND j.state <> 'done'
        AND NOT EXISTS (
            SELECT 1 FROM dead_letters d WHERE d.job_id = j.id AND d.died_at < :died_before
        )
  )
  AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.key = s.key AND l.expires_at > :at)
  AND (s.end_reason = 'forget' OR s.turn_count = 0 OR (
      SELECT count(*) FROM cursors c
      WHERE c.session_id = s.id AND c.delivered_seq >= s.turn_count
        AND c.provider IN (SELECT value FROM json_each(:providers))
  ) = :provider_count)
ORDER BY s.ended_at, s.id
LIMIT :limit
"""
COUNT_LEDGER_OF = (
    "SELECT count(*) AS n FROM ledger WHERE session_id IN (SELECT value FROM json_each(:ids))"
)
JOBS_OF_SESSIONS = "SELECT id FROM jobs WHERE session_id IN (SELECT value FROM json_each(:ids))"
DEAD_LETTERS_OF = (
    "SELECT job_id FROM dead_letters WHERE session_id IN (SELECT value FROM json_each(:ids))"
)
OLD_DONE_JOBS = """
SELECT id FROM jobs WHERE state = 'done' AND updated_at < :done_before
ORDER BY updated_at, id LIMIT :limit
"""
# A dead letter of a live session stays: it may still be redriven to finish that session.
PRUNABLE_DEAD_LETTERS = """
SELECT d.job_id FROM dead_letters d
WHERE d.died_at < :died_before
  AND NOT EXISTS (
      SELECT 1 FROM sessions s WHERE s.id = d.session_id AND s.state <> 'finalized'
  )
ORDER BY d.died_at, d.job_id
LIMIT :limit
"""
EXPIRED_LEASES = """
SELECT key FROM leases WHERE expires_at <= :expired_before ORDER BY expires_at, key LIMIT :limit
"""
DELETE_LEDGER_OF = "DELETE FROM ledger WHERE session_id IN (SELECT value FROM json_each(:ids))"
DELETE_CURSORS_OF = "DELETE FROM cursors WHERE session_id IN (SELECT value FROM json_each(:ids))"
DELETE_TIMERS_OF = "DELETE FROM timers WHERE session_id IN (SELECT value FROM json_each(:ids))"
DELETE_ROUTES_OF = "DELETE FROM routing WHERE session_id IN (SELECT value FROM json_each(:ids))"
DELETE_SESSIONS = "DELETE FROM sessions WHERE id IN (SELECT value FROM json_each(:ids))"
DELETE_JOBS = "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))"
DELETE_DEAD_LETTERS = "DELETE FROM dead_letters WHERE job_id IN (SELECT value FROM json_each(:ids))"
DELETE_LEASES = "DELETE FROM leases WHERE key IN (SELECT value FROM json_each(:ids))"
