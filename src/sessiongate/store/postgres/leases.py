"""Conversation leases and retention on PostgreSQL: a part of `PostgresStore`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sessiongate.errors import LeaseLost
from sessiongate.models import Lease, PruneReport, RetentionRules, Session
from sessiongate.store import intake
from sessiongate.store.postgres import lease_queries as queries
from sessiongate.store.postgres import records
from sessiongate.store.postgres.connection import Cursor, Database
from sessiongate.store.postgres.records import Params, aware
from sessiongate.validation import check_identifier, check_text


def lease_from(row: dict[str, Any]) -> Lease:
    """A `Lease` from a row of `LEASE_COLUMNS`."""
    return Lease(
        key=row["key"],
        owner=row["owner"],
        token=int(row["token"]),
        acquired_at=_utc(row["acquired_at"]),
        expires_at=_utc(row["expires_at"]),
    )


def _utc(value: datetime) -> datetime:
    utc = records.utc(value)
    assert utc is not None  # the columns are NOT NULL
    return utc


async def check_fence(cursor: Cursor, fence: Lease | None) -> None:
    """Raise `LeaseLost` unless `fence` (when given) still holds its key; lock it shared."""
    if fence is None:
        return
    await cursor.execute(queries.FENCE_HOLDS, {"key": fence.key, "token": int(fence.token)})
    if await cursor.fetchone() is None:
        raise lease_lost(fence.key, int(fence.token))


def lease_lost(key: str, token: int) -> LeaseLost:
    """The error refusing a write whose fencing lease on `key` was taken."""
    return LeaseLost(
        f"the lease on {key!r} (token {token}) was taken by another "
        "replica; this one no longer writes for that conversation"
    )


async def release_fence(cursor: Cursor, fence: Lease) -> None:
    """Give `fence` up on an open transaction (with the write it fenced)."""
    await cursor.execute(queries.RELEASE_LEASE, {"key": fence.key, "token": int(fence.token)})


class PostgresLeases:
    """`LeaseStore` and `RetentionStore` for `PostgresStore` (which sets `_db`)."""

    _db: Database

    async def _lease_row(self, query: str, params: Params) -> Lease | None:
        async def run(cursor: Cursor) -> Lease | None:
            await cursor.execute(query, params)
            row = await cursor.fetchone()
            return None if row is None else lease_from(row)

        return await self._db.run(run, alone=True)

    async def acquire_lease(
        self,
        key: str,
        owner: str,
        *,
        at: datetime,
        lease_seconds: float,
        replacing: str | None = None,
    ) -> Lease | None:
        """See `LeaseStore.acquire_lease`."""
        check_identifier(key, what="session key")
        check_text(owner, what="lease owner")
        at = aware(at, "at")
        params = {
            "key": key,
            "owner": owner,
            "at": at,
            "expires_at": at + intake.lease_length(lease_seconds),
            "replacing": replacing,
        }
        return await self._lease_row(queries.ACQUIRE_LEASE, params)

    async def renew_lease(
        self, lease: Lease, *, at: datetime, lease_seconds: float
    ) -> Lease | None:
        """See `LeaseStore.renew_lease`."""
        expires = aware(at, "at") + intake.lease_length(lease_seconds)
        params = {"key": lease.key, "token": int(lease.token), "expires_at": expires}
        return await self._lease_row(queries.RENEW_LEASE, params)

    async def release_lease(self, lease: Lease) -> bool:
        """See `LeaseStore.release_lease`."""

        async def run(cursor: Cursor) -> bool:
            params = {"key": lease.key, "token": int(lease.token)}
            await cursor.execute(queries.RELEASE_LEASE, params)
            return bool(cursor.rowcount == 1)

        return await self._db.run(run, alone=True)

    async def lease_of(self, key: str) -> Lease | None:
        """See `LeaseStore.lease_of`."""
        return await self._lease_row(queries.LEASE_OF, {"key": key})

    async def lease_holders(self, *, at: datetime) -> list[str]:
        """See `LeaseStore.lease_holders`."""

        async def run(cursor: Cursor) -> list[str]:
            return sorted(await _column(cursor, queries.LEASE_HOLDERS, {"at": aware(at, "at")}))

        return await self._db.run(run, alone=True)

    async def expire_leases_of(self, owner: str, *, at: datetime) -> int:
        """See `LeaseStore.expire_leases_of`."""
        check_text(owner, what="lease owner")
        params = {"owner": owner, "at": aware(at, "at")}

        async def run(cursor: Cursor) -> int:
            ended = 0
            for query in (
                queries.EXPIRE_JOB_LEASES,
                queries.EXPIRE_TIMER_LEASES,
                queries.EXPIRE_KEY_LEASES,
            ):
                await cursor.execute(query, params)
                ended += cursor.rowcount
            return ended

        return await self._db.run(run)

    async def stale_sessions(
        self, *, idle_before: datetime, at: datetime, limit: int
    ) -> list[Session]:
        """See `RetentionStore.stale_sessions`."""
        params = {
            "idle_before": aware(idle_before, "idle_before"),
            "at": aware(at, "at"),
            "limit": max(0, limit),
        }

        async def run(cursor: Cursor) -> list[Session]:
            await cursor.execute(queries.STALE_SESSIONS, params)
            return [records.session_from(row) for row in await cursor.fetchall()]

        return await self._db.run(run)

    async def prune(
        self, rules: RetentionRules, *, at: datetime, dry_run: bool = False
    ) -> PruneReport:
        """See `RetentionStore.prune`."""
        params = _rule_params(rules, at)

        async def run(cursor: Cursor) -> PruneReport:
            selection = await _select(cursor, params)
            if not dry_run:
                await _delete(cursor, selection)
            return selection.report

        return await self._db.run(run)


def _rule_params(rules: RetentionRules, at: datetime) -> Params:
    for provider in rules.providers:
        check_text(provider, what="provider name")

    def cutoff(value: datetime | None, what: str) -> datetime | None:
        return None if value is None else aware(value, what)

    return {
        "ended_before": cutoff(rules.sessions_ended_before, "sessions_ended_before"),
        "done_before": cutoff(rules.jobs_done_before, "jobs_done_before"),
        "died_before": cutoff(rules.dead_letters_before, "dead_letters_before"),
        "expired_before": cutoff(rules.leases_expired_before, "leases_expired_before"),
        "at": aware(at, "at"),
        "providers": list(rules.providers),
        "provider_count": len(set(rules.providers)),
        "limit": max(0, rules.limit),
    }


async def _column(cursor: Cursor, query: str, params: Params) -> list[Any]:
    await cursor.execute(query, params)
    return [next(iter(row.values())) for row in await cursor.fetchall()]


@dataclass(frozen=True, slots=True)
class _Selection:
    """What the rules select, with the job ids and lease keys to delete."""

    report: PruneReport
    job_ids: list[int]
    lease_keys: list[str]


async def _select(cursor: Cursor, params: Params) -> _Selection:
    """What the rules select on the state as it is now (the same for a dry run)."""
    sessions: list[str] = []
    if params["ended_before"] is not None:
        sessions = await _column(cursor, queries.PRUNABLE_SESSIONS, params)
    [entries] = await _column(cursor, queries.COUNT_LEDGER_OF, {"ids": sessions})
    jobs = set(await _column(cursor, queries.JOBS_OF_SESSIONS, {"ids": sessions}))
    if params["done_before"] is not None:
        jobs.update(await _column(cursor, queries.OLD_DONE_JOBS, params))
    letters = set(await _column(cursor, queries.DEAD_LETTERS_OF, {"ids": sessions}))
    if params["died_before"] is not None:
        letters.update(await _column(cursor, queries.PRUNABLE_DEAD_LETTERS, params))
    leases: list[str] = []
    if params["expired_before"] is not None:
        leases = await _column(cursor, queries.EXPIRED_LEASES, params)
    report = PruneReport(
        sessions=tuple(sessions),
        entries=int(entries),
        jobs=len(jobs),
        dead_letters=tuple(sorted(letters)),
        leases=len(leases),
    )
    return _Selection(report, sorted(jobs | letters), leases)


async def _delete(cursor: Cursor, selection: _Selection) -> None:
    sessions = {"ids": list(selection.report.sessions)}
    for query in (
        queries.DELETE_LEDGER_OF,
        queries.DELETE_CURSORS_OF,
        queries.DELETE_TIMERS_OF,
        queries.DELETE_ROUTES_OF,
        queries.DELETE_SESSIONS,
    ):
        await cursor.execute(query, sessions)
    await cursor.execute(queries.DELETE_DEAD_LETTERS, {"ids": list(selection.report.dead_letters)})
    await cursor.execute(queries.DELETE_JOBS, {"ids": selection.job_ids})
    await cursor.execute(queries.DELETE_LEASES, {"ids": selection.lease_keys})
