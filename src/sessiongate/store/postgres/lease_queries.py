"""The SQL of conversation leases and retention on PostgreSQL, named as on SQLite."""

from __future__ import annotations

LEASE_COLUMNS = "key, owner, token, acquired_at, expires_at"

ACQUIRE_LEASE = f"""
INSERT INTO leases (key, owner, token, acquired_at, expires_at)
VALUES (%(key)s, %(owner)s, nextval('lease_tokens'), %(at)s, %(expires_at)s)
ON CONFLICT (key) DO UPDATE SET
    owner = EXCLUDED.owner,
    token = EXCLUDED.token,
    acquired_at = EXCLUDED.acquired_at,
    expires_at = EXCLUDED.expires_at
WHERE leases.expires_at <= %(at)s OR leases.owner = %(replacing)s::text
RETURNING {LEASE_COLUMNS}
"""
RENEW_LEASE = f"""
UPDATE leases SET expires_at = %(expires_at)s WHERE key = %(key)s AND token = %(token)s
RETURNING {LEASE_COLUMNS}
"""
RELEASE_LEASE = "DELETE FROM leases WHERE key = %(key)s AND token = %(token)s"
LEASE_OF = f"SELECT {LEASE_COLUMNS} FROM leases WHERE key = %(key)s"
# FOR SHARE: a takeover (an UPDATE of this row) waits until the fenced write commits,
# so no write of the old holder can land after the new holder got the key.
FENCE_HOLDS = "SELECT 1 FROM leases WHERE key = %(key)s AND token = %(token)s FOR SHARE"

# Due timers are the only leased ones (a claim takes due timers): the due index finds them.
LEASE_HOLDERS = """
SELECT lease_owner AS owner FROM jobs WHERE state = 'running' AND lease_expires_at > %(at)s
UNION SELECT lease_owner FROM timers
      WHERE due_at <= %(at)s AND lease_owner IS NOT NULL AND lease_expires_at > %(at)s
UNION SELECT owner FROM leases WHERE expires_at > %(at)s
"""
EXPIRE_JOB_LEASES = """
UPDATE jobs SET lease_expires_at = %(at)s, updated_at = %(at)s
WHERE state = 'running' AND lease_owner = %(owner)s AND lease_expires_at > %(at)s
"""
EXPIRE_TIMER_LEASES = """
UPDATE timers SET lease_expires_at = %(at)s
WHERE due_at <= %(at)s AND lease_owner = %(owner)s AND lease_expires_at > %(at)s
"""
EXPIRE_KEY_LEASES = """
UPDATE leases SET expires_at = %(at)s WHERE owner = %(owner)s AND expires_at > %(at)s
"""

STALE_SESSIONS = """
SELECT s.* FROM sessions s
WHERE s.state = 'active' AND s.last_activity_at < %(idle_before)s
  AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.key = s.key AND l.expires_at > %(at)s)
ORDER BY s.last_activity_at, s.id
LIMIT %(limit)s
"""
# Finalized long enough ago, nothing of it pending or running (a dead job only once its
# letter is old enough to go too), not being handled, and every named provider has
# received all its turns (a forgotten session has none left).
# FOR UPDATE OF s SKIP LOCKED: a session being resumed right now is left for later.
PRUNABLE_SESSIONS = """
SELECT s.id FROM sessions s
WHERE s.state = 'finalized' AND s.ended_at < %(ended_before)s
  AND NOT EXISTS (
      SELECT 1 FROM jobs j WHERE j.session_id = s.id AND j.state <> 'done'
        AND NOT EXISTS (
            SELECT 1 FROM dead_letters d
            WHERE d.job_id = j.id AND d.died_at < %(died_before)s::timestamptz
        )
  )
  AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.key = s.key AND l.expires_at > %(at)s)
  AND (s.end_reason = 'forget' OR s.turn_count = 0 OR (
      SELECT count(*) FROM cursors c
      WHERE c.session_id = s.id AND c.delivered_seq >= s.turn_count
        AND c.provider = ANY(%(providers)s::text[])
  ) = %(provider_count)s)
ORDER BY s.ended_at, s.id
LIMIT %(limit)s
FOR UPDATE OF s SKIP LOCKED
"""
COUNT_LEDGER_OF = "SELECT count(*) AS n FROM ledger WHERE session_id = ANY(%(ids)s::text[])"
JOBS_OF_SESSIONS = "SELECT id FROM jobs WHERE session_id = ANY(%(ids)s::text[])"
DEAD_LETTERS_OF = "SELECT job_id FROM dead_letters WHERE session_id = ANY(%(ids)s::text[])"
OLD_DONE_JOBS = """
SELECT id FROM jobs WHERE state = 'done' AND updated_at < %(done_before)s
ORDER BY updated_at, id LIMIT %(limit)s
"""
# A dead letter of a live session stays: it may still be redriven to finish that session.
PRUNABLE_DEAD_LETTERS = """
SELECT d.job_id FROM dead_letters d
WHERE d.died_at < %(died_before)s
  AND NOT EXISTS (
      SELECT 1 FROM sessions s WHERE s.id = d.session_id AND s.state <> 'finalized'
  )
ORDER BY d.died_at, d.job_id
LIMIT %(limit)s
"""
EXPIRED_LEASES = """
SELECT key FROM leases WHERE expires_at <= %(expired_before)s
ORDER BY expires_at, key LIMIT %(limit)s
"""
DELETE_LEDGER_OF = "DELETE FROM ledger WHERE session_id = ANY(%(ids)s::text[])"
DELETE_CURSORS_OF = "DELETE FROM cursors WHERE session_id = ANY(%(ids)s::text[])"
DELETE_TIMERS_OF = "DELETE FROM timers WHERE session_id = ANY(%(ids)s::text[])"
DELETE_ROUTES_OF = "DELETE FROM routing WHERE session_id = ANY(%(ids)s::text[])"
DELETE_SESSIONS = "DELETE FROM sessions WHERE id = ANY(%(ids)s::text[])"
DELETE_JOBS = "DELETE FROM jobs WHERE id = ANY(%(ids)s::bigint[])"
DELETE_DEAD_LETTERS = "DELETE FROM dead_letters WHERE job_id = ANY(%(ids)s::bigint[])"
DELETE_LEASES = "DELETE FROM leases WHERE key = ANY(%(ids)s::text[])"
