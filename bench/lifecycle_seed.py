"""The stored sessions of the sweep benchmark: a realistic mix, through the API or in bulk.

The store holds `chats` conversations (Telegram DMs), each with a chain of
`per_chat` sessions on its key, as a year of use leaves them: the older ones
ended by the idle policy (`finalized`, no timer, no routing row), the newest one
`active`, routed, with its reset timer (idle policy, 24 h). Of the active ones,
`due` (spread evenly over the chats) went quiet 25-26 h ago, so their timer fell
due 1-2 h ago; every other one was active within the last 23 h, so its timer is
due 1-24 h from now. Ids encode each session's creation time, as real ids do.

Two ways to fill a store:
- `api`: every session through the public `Store.start_session`, each chat's chain
  in order (a session's start ends its predecessor in the same transaction, as a
  rotation does), `concurrency` chats at a time so SQLite's group commit batches
  them. Timers come from `Engine.timer_due`, the one policy function.
- `bulk`: the same rows (sessions, routing rows of the active ones, their timers)
  are written straight into the tables by the benchmark, chat after chat in the
  same order, with the values the store itself would write: one SQLite transaction
  of `executemany` on the closed store's file, or PostgreSQL `COPY`. The due
  sessions are written in place among the others, so their timers are spread over
  the table as they would be after real use (writing them last, through the API,
  would pack them into a few pages and flatter the claim). It exists only because
  the API path writes about 1,700-2,400 sessions per second here on SQLite and about
  500 on PostgreSQL: a million through it takes some seven minutes on SQLite and
  half an hour on PostgreSQL.
Finalized sessions carry no ledger entries and no done jobs: the claim reads only
the `timers` table through its due-time index, and the sweep ends active sessions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from sessiongate.ids import encode_session_id
from sessiongate.keys import KeyPolicy, session_key
from sessiongate.lifecycle.engine import Engine
from sessiongate.models import ChatType, EndReason, EndRequest, Session, SessionState, Source
from sessiongate.store import Store

IDLE = timedelta(hours=24)
KEYS = KeyPolicy()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BULK_CHATS = 20_000
_SESSION_COLUMNS = (
    "id, key, state, end_reason, platform, chat_id, chat_type, user_id, user_name, "
    "created_at, last_activity_at, ended_at, turn_count, token_estimate, epoch"
)


def _spread(chat: int, span: int) -> int:
    """A deterministic, well-spread number in [0, span) for chat number `chat`."""
    return (chat * 2_654_435_761 + 12_345) % span


@dataclass(frozen=True, slots=True)
class Mix:
    """How many sessions, how many of them due, and how they sit in chats."""

    sessions: int
    due: int
    per_chat: int
    now: datetime

    def __post_init__(self) -> None:
        if self.sessions % self.per_chat:
            raise ValueError(f"{self.sessions} sessions do not split into chats of {self.per_chat}")
        if not 0 < self.due <= self.chats:
            raise ValueError(f"{self.due} due sessions need at least as many chats")

    @property
    def chats(self) -> int:
        return self.sessions // self.per_chat

    def is_due(self, chat: int) -> bool:
        stride = self.chats // self.due
        return chat % stride == 0 and chat // stride < self.due

    def chain(self, chat: int) -> list[Session]:
        """The sessions of chat number `chat`, oldest first; the last one is active."""
        chat_id = str(100_000_000 + chat)
        source = Source("telegram", chat_id, ChatType.DM, user_id=chat_id, user_name=f"u{chat}")
        key = session_key(source, KEYS)
        if self.is_due(chat):
            quiet = IDLE + timedelta(hours=1, seconds=_spread(chat, 3600))
        else:
            quiet = timedelta(seconds=_spread(chat, 23 * 3600))
        last = self.now - quiet
        starts = [last - timedelta(days=2 * (self.per_chat - 1 - k)) for k in range(self.per_chat)]
        return [
            Session(
                id=_session_id(at, chat, k),
                key=key,
                platform=source.platform,
                chat_id=chat_id,
                chat_type=ChatType.DM,
                user_id=source.user_id,
                user_name=source.user_name,
                created_at=at,
                last_activity_at=at,
            )
            for k, at in enumerate(starts)
        ]


def _session_id(at: datetime, chat: int, k: int) -> str:
    millis = (at - _EPOCH) // timedelta(milliseconds=1)
    return encode_session_id(millis, (chat << 8) | k)


async def seed_api(store: Store, engine: Engine, mix: Mix, *, concurrency: int) -> int:
    """Write every chat's chain through `start_session`; return how many calls were made."""
    chats = iter(range(mix.chats))
    calls = 0

    async def writer() -> None:
        nonlocal calls
        for chat in chats:
            written = await _write_chain(store, engine, mix.chain(chat))
            calls += written

    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return calls


async def _write_chain(store: Store, engine: Engine, chain: list[Session]) -> int:
    previous: Session | None = None
    for session in chain:
        end = None
        if previous is not None:
            end = EndRequest(previous.id, EndReason.IDLE, at=previous.last_activity_at + IDLE)
        timer = engine.timer_due(session) if session is chain[-1] else None
        await store.start_session(session, end=end, timers=[] if timer is None else [timer])
        previous = session
    return len(chain)


@dataclass
class _Rows:
    """The rows of one slice of chats, with Python values (datetimes, enums as text)."""

    sessions: list[tuple[Any, ...]]
    routing: list[tuple[Any, ...]]
    timers: list[tuple[Any, ...]]


def _bulk_rows(engine: Engine, mix: Mix) -> Iterator[_Rows]:
    """The rows of every session, `_BULK_CHATS` chats at a time."""
    for start in range(0, mix.chats, _BULK_CHATS):
        rows = _Rows([], [], [])
        for chat in range(start, min(mix.chats, start + _BULK_CHATS)):
            chain = mix.chain(chat)
            for old in chain[:-1]:
                ended = old.last_activity_at + IDLE
                rows.sessions.append(_session_row(old, SessionState.FINALIZED, ended))
            active = chain[-1]
            rows.sessions.append(_session_row(active, SessionState.ACTIVE, None))
            rows.routing.append((active.key, active.id, active.created_at))
            timer = engine.timer_due(active)
            if timer is not None:
                rows.timers.append((timer.session_id, timer.kind, timer.due_at))
        yield rows


def _session_row(session: Session, state: SessionState, ended: datetime | None) -> tuple[Any, ...]:
    reason = None if ended is None else EndReason.IDLE.value
    return (
        session.id,
        session.key,
        state.value,
        reason,
        session.platform,
        session.chat_id,
        session.chat_type.value,
        session.user_id,
        session.user_name,
        session.created_at,
        session.last_activity_at,
        ended,
        0,
        0,
        0,
    )


def _micros(value: Any) -> Any:
    return (value - _EPOCH) // timedelta(microseconds=1) if isinstance(value, datetime) else value


def seed_bulk_sqlite(path: Path, engine: Engine, mix: Mix) -> int:
    """Write the bulk rows into the (closed) store's file in one transaction; rows written."""
    marks = ", ".join("?" * len(_SESSION_COLUMNS.split(",")))
    written = 0
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A large page cache for this one connection: the indexes are built in memory.
        conn.execute("PRAGMA cache_size = -1048576")
        conn.execute("BEGIN IMMEDIATE")
        for rows in _bulk_rows(engine, mix):
            conn.executemany(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({marks})",
                (tuple(_micros(v) for v in row) for row in rows.sessions),
            )
            conn.executemany(
                "INSERT INTO routing (key, session_id, updated_at) VALUES (?, ?, ?)",
                (tuple(_micros(v) for v in row) for row in rows.routing),
            )
            conn.executemany(
                "INSERT INTO timers (session_id, kind, due_at) VALUES (?, ?, ?)",
                (tuple(_micros(v) for v in row) for row in rows.timers),
            )
            written += len(rows.sessions)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return written


async def seed_bulk_postgres(dsn: str, engine: Engine, mix: Mix) -> int:
    """`COPY` the bulk rows into the store's database in one transaction; rows written."""
    written = 0
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor() as cursor:
        for rows in _bulk_rows(engine, mix):
            for sql, batch in (
                (f"COPY sessions ({_SESSION_COLUMNS}) FROM STDIN", rows.sessions),
                ("COPY routing (key, session_id, updated_at) FROM STDIN", rows.routing),
                ("COPY timers (session_id, kind, due_at) FROM STDIN", rows.timers),
            ):
                async with cursor.copy(sql) as copy:
                    for row in batch:
                        await copy.write_row(row)
            written += len(rows.sessions)
        await conn.commit()
    return written
