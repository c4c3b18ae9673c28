"""Every error sessiongate raises on purpose lives here.

Each message names what was wrong and what to do about it. Driver errors
(sqlite3, psycopg) are mapped to these at the store boundary, so callers never
see a driver exception.
"""

from __future__ import annotations


class SessionGateError(Exception):
    """Base class of every sessiongate error."""


class ConfigError(SessionGateError):
    """The configuration (file, URL, option) is malformed or names something unknown."""


class InvalidInput(SessionGateError):
    """A value from outside (message, id, key, payload) was refused; nothing was stored."""


class StoreError(SessionGateError):
    """The store failed (unreachable, full, read-only); the operation did not happen."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or opened."""


class SchemaError(StoreError):
    """The database schema does not match this code (not migrated, or newer than the code)."""


class NotFound(SessionGateError):
    """A session, job or other record named by id does not exist."""


class Conflict(SessionGateError):
    """A compare-and-set precondition did not hold: somebody else changed the record first."""


class SessionClosed(Conflict):
    """The session is not active any more, so it takes no new ledger entries."""


class LeaseLost(Conflict):
    """The conversation's lease was taken by another replica; this one may not write for it."""


class PermanentFailure(SessionGateError):
    """A job failed in a way no retry can fix: it goes straight to the dead letters."""


class ProviderFailure(SessionGateError):
    """A memory provider took a commit but failed to process it; the epoch must be replayed."""


class ProviderUnavailable(SessionGateError):
    """A memory provider was unreachable, timed out or failed a call; the job retries it."""


class ProviderRejected(PermanentFailure):
    """A memory provider refused a call as invalid or unauthorised: retrying cannot help.

    Fix the cause (credentials, configuration, data) and redrive the dead letter.
    """


class HookError(ConfigError):
    """A hook or plugin is malformed: unknown hook name, or a signature that does not fit."""
