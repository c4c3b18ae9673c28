"""The memory archive on SQLite: staged turns, archives and facts, ranked by FTS5's BM25.

Writes go through the store's group-commit writer, reads through its reader
pool, each operation a function of one connection like the rest of the SQLite
store. A search is an FTS5 query made of quoted words only (never the user's
text as FTS syntax), restricted to one user by an owner token in the index and,
strictly, by `user_id` in the joined rows.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from functools import partial
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
from sessiongate.store.sqlite import archive_queries as queries
from sessiongate.store.sqlite.codec import from_micros, to_micros
from sessiongate.store.sqlite.connection import one
from sessiongate.store.sqlite.readers import ReaderPool
from sessiongate.store.sqlite.writer import Writer

Params = dict[str, Any]


def owner_token(user_id: str | None) -> str:
    """The index token of a user: one word no query word can equal by chance; '' for none."""
    if user_id is None:
        return ""
    return "o" + hashlib.sha256(user_id.encode()).hexdigest()[:40]


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def match_query(user_id: str, terms: Sequence[str]) -> str:
    """The FTS5 query: this user's rows whose text holds any of the terms (each quoted)."""
    words = " OR ".join(_quoted(term) for term in terms)
    return f"owner : {_quoted(owner_token(user_id))} AND text : ({words})"


class SQLiteArchive:
    """`ArchiveStore` on the SQLite store's writer and readers."""

    def __init__(self, writer: Writer, readers: ReaderPool) -> None:
        self._writer = writer
        self._readers = readers

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
                "created_at": to_micros(entry.created_at, what="staged entry time"),
            }
            for entry in entries
        ]
        if rows:
            await self._writer.run(partial(_stage, rows=rows))

    async def staged(self, session_id: str, *, first_seq: int, last_seq: int) -> list[StagedTurn]:
        """See `ArchiveStore.staged`."""
        params = {"session_id": session_id, "first_seq": first_seq, "last_seq": last_seq}
        return await self._readers.run(partial(_staged, params=params))

    async def staged_count(self, session_id: str) -> int:
        """See `ArchiveStore.staged_count`."""
        return await self._readers.run(partial(_staged_count, session_id=session_id))

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
        return await self._readers.run(partial(_has_epoch, params=params))

    async def release_staged(self, session_id: str, *, upto_seq: int) -> int:
        """See `ArchiveStore.release_staged`."""
        params = {"session_id": session_id, "upto_seq": upto_seq}
        return await self._writer.run(partial(_release, params=params))

    async def archive_epoch(self, archive: EpochArchive, *, facts: Sequence[str] = ()) -> bool:
        """See `ArchiveStore.archive_epoch`."""
        archive = checked_archive(archive)
        params = {
            "user_id": archive.user_id,
            "owner": owner_token(archive.user_id),
            "platform": archive.platform,
            "session_id": archive.session_id,
            "epoch": archive.epoch,
            "first_seq": archive.first_seq,
            "last_seq": archive.last_seq,
            "text": archive.text,
            "created_at": to_micros(archive.created_at, what="archive time"),
        }
        operation = partial(_archive_epoch, params=params, facts=checked_facts(facts))
        return await self._writer.run(operation)

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
        limit = search_limit(limit)
        if not terms or limit == 0:
            return []
        params = {
            "match": match_query(user_id, terms),
            "user_id": user_id,
            "platform": platform,
            "exclude": exclude_session_id,
            "limit": limit,
        }
        return await self._readers.run(partial(_search, params=params, terms=terms))

    async def forget(self, *, user_id: str | None = None, session_id: str | None = None) -> int:
        """See `ArchiveStore.forget`."""
        checked_forget(user_id, session_id)
        operation = partial(_forget, user_id=user_id, session_id=session_id)
        return await self._writer.run(operation)


# -- operations on one connection --------------------------------------------------------


def _stage(conn: sqlite3.Connection, rows: list[Params]) -> None:
    conn.executemany(queries.STAGE_TURN, rows)


def _staged(conn: sqlite3.Connection, params: Params) -> list[StagedTurn]:
    return [
        StagedTurn(row["seq"], Role(row["role"]), row["text"], from_micros(row["created_at"]))
        for row in conn.execute(queries.STAGED_TURNS, params)
    ]


def _staged_count(conn: sqlite3.Connection, session_id: str) -> int:
    row = one(conn, queries.COUNT_STAGED, {"session_id": session_id})
    return 0 if row is None else int(row["staged"])


def _has_epoch(conn: sqlite3.Connection, params: Params) -> bool:
    return one(conn, queries.HAS_EPOCH, params) is not None


def _release(conn: sqlite3.Connection, params: Params) -> int:
    return conn.execute(queries.RELEASE_STAGED, params).rowcount


def _archive_epoch(conn: sqlite3.Connection, params: Params, facts: list[str]) -> bool:
    """Replace another attempt at this epoch, insert it unless present, release its turns."""
    release = {"session_id": params["session_id"], "upto_seq": params["last_seq"]}
    conn.execute(queries.DROP_OTHER_ATTEMPT, params)
    if conn.execute(queries.INSERT_ARCHIVE, params).rowcount != 1:
        conn.execute(queries.RELEASE_STAGED, release)
        return False
    conn.executemany(queries.INSERT_FACT, [{**params, "text": fact} for fact in facts])
    conn.execute(queries.RELEASE_STAGED, release)
    return True


def _search(conn: sqlite3.Connection, params: Params, terms: list[str]) -> list[ArchiveHit]:
    return [
        ArchiveHit(
            kind=MemoryKind(row["kind"]),
            session_id=row["session_id"],
            text=snippet(row["text"], terms),
            score=-float(row["rank"]),
            created_at=from_micros(row["created_at"]),
        )
        for row in conn.execute(queries.SEARCH, params)
    ]


def _forget(conn: sqlite3.Connection, user_id: str | None, session_id: str | None) -> int:
    erased = 0
    if user_id is not None:
        erased += conn.execute(queries.FORGET_USER_ITEMS, {"user_id": user_id}).rowcount
        erased += conn.execute(queries.FORGET_USER_STAGED, {"user_id": user_id}).rowcount
    if session_id is not None:
        erased += conn.execute(queries.FORGET_SESSION_ITEMS, {"session_id": session_id}).rowcount
        erased += conn.execute(queries.FORGET_SESSION_STAGED, {"session_id": session_id}).rowcount
    return erased
