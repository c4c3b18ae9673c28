"""The memory archive on PostgreSQL: staged turns, archives and facts, ranked by `ts_rank`.

Each operation is one transaction through the store's `Database.run`, so
driver errors are mapped at the same boundary as the rest of the store. Texts
are indexed by a generated `tsvector` column (English configuration) with a GIN
index; a query reaches `websearch_to_tsquery` as plain words joined by `or`,
so no user text is ever read as an operator, and every search names its user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sessiongate.models import Entry, Role
from sessiongate.store.archive import (
    ArchiveHit,
    EpochArchive,
    MemoryKind,
    StagedTurn,
    checked_archive,
    checked_facts,
    checked_forget,
    checked_turns,
    search_limit,
    search_terms,
    snippet,
)
from sessiongate.store.postgres import archive_queries as queries
from sessiongate.store.postgres.connection import Cursor, Database

Params = dict[str, Any]

# `or` between words is websearch_to_tsquery's one operator made of letters.
_OPERATOR_WORDS = frozenset({"or"})


def websearch_text(terms: Sequence[str]) -> str:
    """The input of `websearch_to_tsquery` that matches any of `terms` (plain words)."""
    return " or ".join(term for term in terms if term not in _OPERATOR_WORDS)


class PostgresArchive:
    """`ArchiveStore` on the PostgreSQL store's connection pool."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def stage(self, user_id: str | None, session_id: str, entries: Sequence[Entry]) -> None:
        """See `ArchiveStore.stage`."""
        checked_turns(session_id, entries)
        rows = [
            {
                "session_id": session_id,
                "seq": entry.seq,
                "user_id": user_id,
                "role": Role(entry.role).value,
                "text": entry.text,
                "created_at": entry.created_at,
            }
            for entry in entries
        ]
        if not rows:
            return

        async def run(cursor: Cursor) -> None:
            await cursor.executemany(queries.STAGE_TURN, rows)

        await self._db.run(run)

    async def staged(self, session_id: str, *, first_seq: int, last_seq: int) -> list[StagedTurn]:
        """See `ArchiveStore.staged`."""
        params = {"session_id": session_id, "first_seq": first_seq, "last_seq": last_seq}
        rows = await self._all(queries.STAGED_TURNS, params)
        return [
            StagedTurn(row["seq"], Role(row["role"]), row["text"], row["created_at"])
            for row in rows
        ]

    async def staged_count(self, session_id: str) -> int:
        """See `ArchiveStore.staged_count`."""
        [row] = await self._all(queries.COUNT_STAGED, {"session_id": session_id})
        return int(row["staged"])

    async def has_epoch(
        self, session_id: str, *, epoch: int, first_seq: int, last_seq: int
    ) -> bool:
        """See `ArchiveStore.has_epoch`."""
        params = {
            "session_id": session_id,
            "epoch": epoch,
            "first_seq": first_seq,
            "last_seq": last_seq,
        }
        return bool(await self._all(queries.HAS_EPOCH, params))

    async def release_staged(self, session_id: str, *, upto_seq: int) -> int:
        """See `ArchiveStore.release_staged`."""
        params = {"session_id": session_id, "upto_seq": upto_seq}

        async def run(cursor: Cursor) -> int:
            await cursor.execute(queries.RELEASE_STAGED, params)
            return cursor.rowcount

        return await self._db.run(run)

    async def archive_epoch(self, archive: EpochArchive, *, facts: Sequence[str] = ()) -> bool:
        """See `ArchiveStore.archive_epoch`."""
        archive = checked_archive(archive)
        kept = checked_facts(facts)
        params = {
            "user_id": archive.user_id,
            "platform": archive.platform,
            "session_id": archive.session_id,
            "epoch": archive.epoch,
            "first_seq": archive.first_seq,
            "last_seq": archive.last_seq,
            "text": archive.text,
            "created_at": archive.created_at,
        }
        release = {"session_id": archive.session_id, "upto_seq": archive.last_seq}

        async def run(cursor: Cursor) -> bool:
            await cursor.execute(queries.LOCK_EPOCH, params)
            await cursor.execute(queries.DROP_OTHER_ATTEMPT, params)
            await cursor.execute(queries.INSERT_ARCHIVE, params)
            inserted = await cursor.fetchone() is not None
            if inserted and kept:
                await cursor.executemany(
                    queries.INSERT_FACT, [{**params, "text": fact} for fact in kept]
                )
            await cursor.execute(queries.RELEASE_STAGED, release)
            return inserted

        return await self._db.run(run)

    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int,
        platform: str | None = None,
        exclude_session_id: str | None = None,
    ) -> list[ArchiveHit]:
        """See `ArchiveStore.search`."""
        terms = search_terms(query)
        text = websearch_text(terms)
        limit = search_limit(limit)
        if not text or limit == 0:
            return []
        params = {
            "query": text,
            "user_id": user_id,
            "platform": platform,
            "exclude": exclude_session_id,
            "limit": limit,
        }
        rows = await self._all(queries.SEARCH, params)
        return [
            ArchiveHit(
                kind=MemoryKind(row["kind"]),
                session_id=row["session_id"],
                text=snippet(row["text"], terms),
                score=float(row["score"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    async def forget(self, *, user_id: str | None = None, session_id: str | None = None) -> int:
        """See `ArchiveStore.forget`."""
        checked_forget(user_id, session_id)
        steps: list[tuple[str, Params]] = []
        if user_id is not None:
            by_user = {"user_id": user_id}
            steps += [(queries.FORGET_USER_ITEMS, by_user), (queries.FORGET_USER_STAGED, by_user)]
        if session_id is not None:
            by_session = {"session_id": session_id}
            steps += [
                (queries.FORGET_SESSION_ITEMS, by_session),
                (queries.FORGET_SESSION_STAGED, by_session),
            ]

        async def run(cursor: Cursor) -> int:
            erased = 0
            for statement, params in steps:
                await cursor.execute(statement, params)
                erased += cursor.rowcount
            return erased

        return await self._db.run(run)

    async def _all(self, query: str, params: Params) -> list[dict[str, Any]]:
        async def run(cursor: Cursor) -> list[dict[str, Any]]:
            await cursor.execute(query, params)
            return await cursor.fetchall()

        return await self._db.run(run)
