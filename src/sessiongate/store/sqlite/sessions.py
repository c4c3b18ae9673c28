"""Sessions, routing and the ledger: the statements of each operation, on one connection.

Write functions run inside the writer's transaction (in their own savepoint, or,
for appends queued together, in one they share), so raising anywhere undoes
everything they wrote. Their parameters were
validated and encoded by `codec` beforehand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sessiongate.errors import Conflict, LeaseLost, NotFound, SessionClosed, SessionGateError
from sessiongate.models import Entry, Session
from sessiongate.store.sqlite import outbox, queries
from sessiongate.store.sqlite.codec import (
    EntryParams,
    entry_from_row,
    from_micros,
    session_from_row,
)
from sessiongate.store.sqlite.connection import one
from sessiongate.store.sqlite.leases import check_fence, held_fences, lease_lost

Params = Mapping[str, Any]
T = TypeVar("T")


def _state_of(conn: sqlite3.Connection, session_id: str) -> sqlite3.Row:
    row = one(conn, queries.SESSION_STATE, {"id": session_id})
    if row is None:
        raise NotFound(f"session {session_id!r} does not exist")
    return row


def end(conn: sqlite3.Connection, request: Params) -> bool:
    """End a session (the one funnel); False, writing nothing, if its state was not expected."""
    session_id = request["id"]
    _state_of(conn, session_id)
    check_fence(conn, request.get("fence"))
    marked = conn.execute(
        queries.MARK_ENDING,
        {
            "id": session_id,
            "reason": request["reason"],
            "detail": request["detail"],
            "at": request["at"],
            "expected": request["expected"],
            "turns": request["turns"],
        },
    )
    if marked.rowcount != 1:
        return False
    conn.execute(queries.UNROUTE_SESSION, {"session_id": session_id})
    conn.execute(queries.DELETE_SESSION_TIMERS, {"session_id": session_id})
    outbox.enqueue(conn, request["jobs"])
    conn.execute(queries.FINALIZE_IF_DONE, {"id": session_id})
    return True


def _end_first(conn: sqlite3.Connection, request: Params | None) -> None:
    if request is not None and not end(conn, request):
        raise Conflict(
            f"session {request['id']!r} is no longer in the expected state "
            f"{request['expected']}; it was changed first by another operation"
        )


def _route(conn: sqlite3.Connection, key: str, session_id: str, at: int) -> None:
    """Route `key` to `session_id`, unless it already routes to another session."""
    route = one(conn, queries.ROUTE_OF_KEY, {"key": key})
    if route is None:
        conn.execute(queries.INSERT_ROUTE, {"key": key, "session_id": session_id, "at": at})
    elif route["session_id"] != session_id:
        raise Conflict(
            f"session key {key!r} already routes to session {route['session_id']!r}; "
            "end that session first"
        )


def _schedule(conn: sqlite3.Connection, timers: Sequence[Params], jobs: Sequence[Params]) -> None:
    for timer in timers:
        conn.execute(queries.SET_TIMER, timer)
    outbox.enqueue(conn, jobs)


def start(
    conn: sqlite3.Connection,
    session: Params,
    *,
    end_request: Params | None,
    copy_from: str | None,
    copy_upto: int | None,
    timers: Sequence[Params],
    jobs: Sequence[Params],
    fence: Params | None = None,
) -> Session:
    """Insert an active session and route its key to it (see `SessionStore.start_session`)."""
    session_id = session["id"]
    check_fence(conn, fence)
    _end_first(conn, end_request)
    if one(conn, queries.SESSION_STATE, {"id": session_id}) is not None:
        raise Conflict(f"session {session_id!r} already exists")
    conn.execute(queries.INSERT_SESSION, session)
    if copy_from is not None:
        _state_of(conn, copy_from)
        conn.execute(
            queries.COPY_ENTRIES,
            {"target_id": session_id, "source_id": copy_from, "upto_seq": copy_upto},
        )
        totals = one(conn, queries.LEDGER_TOTALS, {"session_id": session_id})
        assert totals is not None  # an aggregate always yields a row
        conn.execute(
            queries.SET_SESSION_COUNTERS,
            {
                "id": session_id,
                "turn_count": totals["turn_count"],
                "token_estimate": totals["token_estimate"],
            },
        )
    _route(conn, session["key"], session_id, session["created_at"])
    _schedule(conn, timers, jobs)
    return get(conn, session_id)


def reopen(
    conn: sqlite3.Connection,
    session_id: str,
    *,
    at: int,
    end_request: Params | None,
    timers: Sequence[Params],
    jobs: Sequence[Params],
    fence: Params | None = None,
) -> Session:
    """Make an ended session active again (see `SessionStore.reopen_session`)."""
    check_fence(conn, fence)
    target = _state_of(conn, session_id)
    if end_request is not None:
        _state_of(conn, end_request["id"])  # an unknown session to end is NotFound first
    if target["state"] == "active":
        raise Conflict(f"session {session_id!r} is active; only an ended session can be resumed")
    _end_first(conn, end_request)
    row = one(conn, queries.REOPEN_SESSION, {"id": session_id, "at": at})
    if row is None:
        raise Conflict(f"session {session_id!r} became active while it was being resumed")
    _route(conn, row["key"], session_id, at)
    _schedule(conn, timers, jobs)
    return session_from_row(row)


def _refusal(session_id: str, state: sqlite3.Row | None) -> NotFound | SessionClosed:
    """Why entries cannot be appended to a session, given its `SESSION_STATE` row."""
    if state is None:
        return NotFound(f"session {session_id!r} does not exist")
    return SessionClosed(
        f"session {session_id!r} is {state['state']} and takes no new entries; "
        "route the conversation to its current session"
    )


def append(
    conn: sqlite3.Connection,
    session_id: str,
    entries: Sequence[EntryParams],
    *,
    at: int,
    fence: Params | None = None,
    release: bool = False,
) -> list[Entry]:
    """Append entries to an active session's ledger, seqs dense from `turn_count + 1`.

    Two statements: the counters first (which also checks that the session is active,
    and yields the seqs), then the rows. A refusal costs one more read.
    """
    check_fence(conn, fence)
    if not entries:
        state = one(conn, queries.SESSION_STATE, {"id": session_id})
        if state is None or state["state"] != "active":
            raise _refusal(session_id, state)
        _release(conn, fence, release)
        return []
    tokens = sum(params.entry.token_estimate for params in entries)
    counted = one(conn, queries.COUNT_ENTRIES[1], (session_id, len(entries), tokens, at))
    if counted is None:
        raise _refusal(session_id, one(conn, queries.SESSION_STATE, {"id": session_id}))
    first = counted[1] - len(entries) + 1
    _insert_entries(conn, _ledger_rows(session_id, entries, first, at))
    _release(conn, fence, release)
    return _appended(session_id, entries, first, at)


@dataclass(frozen=True, slots=True)
class Append:
    """One `append_entries` call, as a write operation of the writer.

    Appends queued next to each other run together (`run_together`), so a batch of them
    costs a few statements instead of two statements and a savepoint each.
    """

    session_id: str
    entries: Sequence[EntryParams]
    at: int
    fence: Params | None = None
    release: bool = False

    def __call__(self, conn: sqlite3.Connection) -> list[Entry]:
        return append(
            conn, self.session_id, self.entries, at=self.at, fence=self.fence, release=self.release
        )

    @staticmethod
    def run_together(
        conn: sqlite3.Connection, appends: Sequence[Append]
    ) -> list[list[Entry] | SessionGateError]:
        """Run `appends` in their order; each one's entries, or the error refusing it."""
        return append_together(conn, appends)


def append_together(
    conn: sqlite3.Connection, appends: Sequence[Append]
) -> list[list[Entry] | SessionGateError]:
    """`append` for each of `appends` in order; one that is refused writes nothing.

    The counters of every session move at once, by the total of its appends (which also
    checks that it is active, and yields its seqs); the appends then number their
    entries in the order they came, as one by one they would, and all rows are inserted
    at once. A refusal costs one more read.
    """
    lost = _lost_fences(conn, appends)
    totals: dict[str, tuple[int, int, int]] = {}
    for item in appends:
        if item.entries and id(item) not in lost:
            count, tokens, _ = totals.get(item.session_id, (0, 0, 0))
            tokens += sum(params.entry.token_estimate for params in item.entries)
            totals[item.session_id] = (count + len(item.entries), tokens, item.at)
    next_seq = {
        session_id: turn_count - totals[session_id][0] + 1
        for session_id, turn_count in _count_entries(conn, totals)
    }
    outcomes: list[list[Entry] | SessionGateError] = []
    rows: list[tuple[Any, ...]] = []
    for item in appends:
        if id(item) in lost:
            outcomes.append(lost[id(item)])
            continue
        first = next_seq.get(item.session_id)
        if not item.entries or first is None:
            state = one(conn, queries.SESSION_STATE, {"id": item.session_id})
            refused = bool(item.entries) or state is None or state["state"] != "active"
            outcomes.append(_refusal(item.session_id, state) if refused else [])
            continue
        next_seq[item.session_id] = first + len(item.entries)
        rows.extend(_ledger_rows(item.session_id, item.entries, first, item.at))
        outcomes.append(_appended(item.session_id, item.entries, first, item.at))
    _insert_entries(conn, rows)
    for item, outcome in zip(appends, outcomes, strict=True):
        if not isinstance(outcome, SessionGateError):
            _release(conn, item.fence, item.release)
    return outcomes


def _release(conn: sqlite3.Connection, fence: Params | None, release: bool) -> None:
    """Give the fencing lease up with the write, when asked to."""
    if release and fence is not None:
        conn.execute(queries.RELEASE_LEASE, fence)


def _lost_fences(conn: sqlite3.Connection, appends: Sequence[Append]) -> dict[int, LeaseLost]:
    """The fenced appends whose lease no longer holds its key (by `id` of the append)."""
    fences = [item.fence for item in appends if item.fence is not None]
    if not fences:
        return {}
    held = held_fences(conn, fences)
    lost: dict[int, LeaseLost] = {}
    for item in appends:
        if item.fence is not None and (item.fence["key"], item.fence["token"]) not in held:
            lost[id(item)] = lease_lost(item.fence)
    return lost


def _insert_entries(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if len(rows) == 1:
        conn.execute(queries.INSERT_ENTRIES[1], rows[0])
        return
    for chunk in _chunks(rows):
        conn.execute(queries.INSERT_ENTRIES[len(chunk)], [value for row in chunk for value in row])


def _count_entries(
    conn: sqlite3.Connection, totals: Mapping[str, tuple[int, int, int]]
) -> list[tuple[str, int]]:
    """Add (count, tokens, at) to each active session's counters; their new turn counts."""
    counted: list[tuple[str, int]] = []
    for chunk in _chunks(list(totals.items())):
        params = [value for session_id, total in chunk for value in (session_id, *total)]
        counted.extend(
            (row[0], row[1]) for row in conn.execute(queries.COUNT_ENTRIES[len(chunk)], params)
        )
    return counted


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """`items` in consecutive chunks of the sizes the together-statements come in."""
    start = 0
    for size in queries.TOGETHER_SIZES:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


def _ledger_rows(
    session_id: str, entries: Sequence[EntryParams], first: int, at: int
) -> list[tuple[Any, ...]]:
    """Rows of `ENTRY_COLUMNS` for `entries`, numbered from `first`."""
    return [
        (
            session_id,
            seq,
            item.entry.role.value,
            item.entry.text,
            item.parts,
            item.entry.platform_message_id,
            item.entry.token_estimate,
            item.meta,
            at,
        )
        for seq, item in enumerate(entries, start=first)
    ]


def _appended(session_id: str, entries: Sequence[EntryParams], first: int, at: int) -> list[Entry]:
    """The records `entries` became, numbered from `first`."""
    created_at = from_micros(at)
    return [
        Entry(
            session_id=session_id,
            seq=seq,
            role=item.entry.role,
            text=item.entry.text,
            created_at=created_at,
            token_estimate=item.entry.token_estimate,
            parts=item.entry.parts,
            platform_message_id=item.entry.platform_message_id,
            meta=item.entry.meta,
        )
        for seq, item in enumerate(entries, start=first)
    ]


def erase(conn: sqlite3.Connection, session_id: str) -> int:
    """Delete an ended session's ledger entries and cursors; the row stays."""
    if _state_of(conn, session_id)["state"] == "active":
        raise Conflict(f"session {session_id!r} is active; end it before erasing it")
    erased = conn.execute(queries.ERASE_LEDGER, {"id": session_id}).rowcount
    conn.execute(queries.ERASE_CURSORS, {"id": session_id})
    return int(erased)


def set_title(conn: sqlite3.Connection, session_id: str, title: str | None) -> Session:
    """Set a session's title."""
    row = one(conn, queries.SET_TITLE, {"id": session_id, "title": title})
    if row is None:
        raise NotFound(f"session {session_id!r} does not exist")
    return session_from_row(row)


# -- reads -----------------------------------------------------------------------------------


def get(conn: sqlite3.Connection, session_id: str) -> Session:
    """The session with this id; raises `NotFound`."""
    found = find(conn, session_id)
    if found is None:
        raise NotFound(f"session {session_id!r} does not exist")
    return found


def find(conn: sqlite3.Connection, session_id: str) -> Session | None:
    """The session with this id, or None."""
    row = one(conn, queries.GET_SESSION, {"id": session_id})
    return None if row is None else session_from_row(row)


def routed(conn: sqlite3.Connection, key: str) -> Session | None:
    """The session `key` routes to, or None."""
    row = one(conn, queries.ROUTED_SESSION, {"key": key})
    return None if row is None else session_from_row(row)


def search(conn: sqlite3.Connection, filters: Params) -> list[Session]:
    """Sessions matching `filters` (the parameters of `LIST_SESSIONS`), newest first."""
    if filters["key"] is not None:
        sql = queries.LIST_SESSIONS_BY_KEY
    elif filters["user_id"] is not None:
        sql = queries.LIST_SESSIONS_BY_USER
    elif filters["state"] is not None:
        sql = queries.LIST_SESSIONS_BY_STATE
    else:
        sql = queries.LIST_SESSIONS
    return [session_from_row(row) for row in conn.execute(sql, filters)]


def ledger(conn: sqlite3.Connection, filters: Params) -> list[Entry]:
    """Ledger entries matching `filters` (the parameters of `LIST_ENTRIES`), ascending."""
    return [entry_from_row(row) for row in conn.execute(queries.LIST_ENTRIES, filters)]
