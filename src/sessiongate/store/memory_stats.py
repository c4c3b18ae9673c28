"""`Store.stats` of the in-memory reference store, over its plain dicts.

The SQL stores compute the same aggregates in the database; this is the
reference they are tested against (`tests/store/test_stats.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime

from sessiongate.models import Cursor, DeadLetter, Session, SessionState, StoreStats

LIVE = (SessionState.ACTIVE, SessionState.ENDING)


def payload_provider(payload: Mapping[str, object]) -> str:
    """The provider a job's payload names, or "" (hook events and the like name none)."""
    provider = payload.get("provider")
    return provider if isinstance(provider, str) else ""


def compute_stats(
    sessions: Mapping[str, Session],
    cursors: Iterable[Cursor],
    dead: Iterable[DeadLetter],
    *,
    ended_since: datetime,
    limit: int,
) -> StoreStats:
    """The `StoreStats` of these records (see `Store.stats`)."""
    by_state = dict.fromkeys((state.value for state in SessionState), 0)
    ended: Counter[str] = Counter()
    turns = live_turns = 0
    for session in sessions.values():
        by_state[session.state.value] += 1
        turns += session.turn_count
        if session.state in LIVE:
            live_turns += session.turn_count
        if session.end_reason is not None:
            ended[session.end_reason.value] += 1
    delivered: Counter[str] = Counter()
    failing: Counter[str] = Counter()
    last_commit: dict[str, datetime] = {}
    live = {session.id for session in sessions.values() if session.state in LIVE}
    for cursor in cursors:
        if cursor.session_id in live:
            delivered[cursor.provider] += cursor.delivered_seq
        if cursor.last_error is not None:
            failing[cursor.provider] += 1
        at = cursor.last_commit_at
        if at is not None and (
            cursor.session_id not in last_commit or at > last_commit[cursor.session_id]
        ):
            last_commit[cursor.session_id] = at
    letters = Counter((d.kind, payload_provider(d.payload)) for d in dead)
    return StoreStats(
        sessions=by_state,
        ended=dict(ended),
        turns=turns,
        live_turns=live_turns,
        live_delivered=dict(delivered),
        failing_cursors=dict(failing),
        dead_letters=dict(letters),
        commit_delays=_delays(sessions, last_commit, ended_since, limit),
        size_bytes=None,
    )


def _delays(
    sessions: Mapping[str, Session],
    last_commit: Mapping[str, datetime],
    ended_since: datetime,
    limit: int,
) -> tuple[float, ...]:
    finished = [
        (session.ended_at, session.id, (last_commit[session.id] - session.ended_at))
        for session in sessions.values()
        if session.state is SessionState.FINALIZED
        and session.ended_at is not None
        and session.ended_at >= ended_since
        and session.id in last_commit
        and last_commit[session.id] >= session.ended_at
    ]
    finished.sort(reverse=True)
    return tuple(delay.total_seconds() for _, _, delay in finished[: max(0, limit)])
