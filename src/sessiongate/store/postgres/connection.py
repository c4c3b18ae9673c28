"""The connection pool of the PostgreSQL store and its error boundary.

Every operation runs through `Database.run`: one transaction on a pooled
connection, driver errors mapped to `sessiongate.errors` on the way out, and a
transaction that lost a deadlock or serialization race retried whole.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from sessiongate.errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    SessionGateError,
    StoreError,
    StoreUnavailable,
)
from sessiongate.store.postgres import queries
from sessiongate.store.url import parse_store_url

log = logging.getLogger(__name__)

T = TypeVar("T")
Cursor = AsyncCursor[DictRow]
Connection = AsyncConnection[DictRow]

# Losing a deadlock or a serialization race rolls the whole transaction back,
# so running it again is safe.
_RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure)
_ATTEMPTS = 3
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('[^']*'|[^&\s]*)", re.IGNORECASE)


def redact(dsn: str) -> str:
    """The DSN with any password masked, in URL or key=value form."""
    text = dsn
    if "://" in dsn:
        try:
            text = parse_store_url(dsn).redacted()
        except ConfigError:
            text = dsn
    return _PASSWORD_PARAM.sub(r"\1***", text)


def _scrub(message: str, dsn: str) -> str:
    """Remove the DSN's password from a driver message, should it echo it."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        message = message.replace(str(password), "***")
    return message.strip()


def _hint(message: str) -> str:
    lowered = message.lower()
    if "does not exist" in lowered and "database" in lowered:
        return "create the database (e.g. `createdb NAME`) or fix its name in the store URL"
    if "password" in lowered or "authentication" in lowered or "role" in lowered:
        return "check the user name and password in the store URL"
    if "resolve host" in lowered:
        return "check the host name in the store URL"
    return "check that the PostgreSQL server is running, reachable and accepting connections"


def unavailable(dsn: str, exc: BaseException) -> StoreUnavailable:
    """A `StoreUnavailable` naming the redacted DSN, the cause and what to do."""
    reason = _scrub(str(exc), dsn) or type(exc).__name__
    return StoreUnavailable(
        f"cannot use the PostgreSQL store at {redact(dsn)}: {reason}; {_hint(reason)}"
    )


def map_error(dsn: str, exc: Exception) -> SessionGateError:
    """The sessiongate error for a driver error raised inside an operation."""
    if isinstance(exc, PoolClosed):
        return StoreError(f"the PostgreSQL store at {redact(dsn)} is closed; open a new one")
    if isinstance(exc, errors.UniqueViolation):
        return Conflict(
            f"a record with the same identity already exists: {exc.diag.message_detail}"
        )
    if isinstance(exc, UnicodeEncodeError):
        return InvalidInput("a value is not valid Unicode (a lone surrogate); send UTF-8 text")
    if isinstance(exc, psycopg.DataError):
        return InvalidInput(f"a value was refused by the database: {_scrub(str(exc), dsn)}")
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return unavailable(dsn, exc)
    return StoreError(f"the PostgreSQL store at {redact(dsn)} failed: {_scrub(str(exc), dsn)}")


async def _configure(conn: AsyncConnection[object]) -> None:
    # Times come back in UTC whatever the server's default zone is.
    await conn.execute(queries.SET_UTC)


class Database:
    """A pool of autocommit connections; `run` wraps one operation in one transaction."""

    def __init__(self, dsn: str, pool: AsyncConnectionPool[Connection]) -> None:
        self.dsn = dsn
        self._pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, wait_seconds: float = 10.0
    ) -> Database:
        """Open a pool on `dsn`; raise `StoreUnavailable` saying why if it cannot connect.

        `wait_seconds` bounds both one connection attempt and the pool's opening.
        """
        timeout = _connect_timeout(dsn, wait_seconds)
        # One direct attempt first: the pool only reports a timeout, while this
        # names the cause (refused, unknown database, bad password).
        try:
            probe = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, connect_timeout=timeout
            )
        except (psycopg.Error, OSError) as exc:
            raise unavailable(dsn, exc) from None
        await probe.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            dsn,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "connect_timeout": timeout, "row_factory": dict_row},
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=_configure,
            # A connection broken by a server restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            timeout=wait_seconds,
            name="sessiongate",
        )
        try:
            await pool.open(wait=True, timeout=wait_seconds)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise unavailable(dsn, exc) from None
        return cls(dsn, pool)

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self._pool.close()

    async def run(self, operation: Callable[[Cursor], Awaitable[T]], *, alone: bool = False) -> T:
        """Run `operation` in one transaction; map driver errors; retry lost races.

        With `alone`, the operation runs ONE statement, which is a transaction of its own
        on these autocommit connections: no BEGIN and COMMIT round trips around it.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._cursor(alone) as cursor:
                    return await operation(cursor)
            except _RETRYABLE as exc:
                if attempt == _ATTEMPTS:
                    raise map_error(self.dsn, exc) from None
                log.info("retrying a PostgreSQL transaction that lost a race: %s", exc)
            except (psycopg.Error, PoolTimeout, UnicodeEncodeError) as exc:
                raise map_error(self.dsn, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def _cursor(self, alone: bool) -> AsyncIterator[Cursor]:
        async with self._pool.connection() as conn:
            if alone:
                async with conn.cursor() as cursor:
                    yield cursor
                return
            async with conn.transaction(), conn.cursor() as cursor:
                yield cursor


def _connect_timeout(dsn: str, default: float) -> int | None:
    """The DSN's own `connect_timeout`, else `default`; `ConfigError` if the DSN is malformed."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError(
            f"the PostgreSQL store URL {redact(dsn)} is malformed; expected "
            "postgresql://user:password@host:port/database"
        ) from None
    if "connect_timeout" in params:
        return None  # libpq reads it from the DSN
    return max(1, round(default))
