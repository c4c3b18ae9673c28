"""`Store.stats` on PostgreSQL: the metrics aggregates, read in one snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sessiongate.models import JobState, OutboxStats, SessionState, StoreStats
from sessiongate.store.postgres import queries
from sessiongate.store.postgres.connection import Cursor
from sessiongate.store.postgres.records import Params

_LIVE = (SessionState.ACTIVE.value, SessionState.ENDING.value)


async def read_stats(cursor: Cursor, params: Params) -> StoreStats:
    """The aggregates of `Store.stats` (`params`: `ended_since` and `limit`)."""
    await cursor.execute(queries.STATS_SNAPSHOT)
    by_state = dict.fromkeys((state.value for state in SessionState), 0)
    ended: dict[str, int] = {}
    turns = live_turns = 0
    await cursor.execute(queries.STATS_SESSIONS)
    for row in await cursor.fetchall():
        by_state[row["state"]] += row["n"]
        turns += int(row["turns"])
        if row["state"] in _LIVE:
            live_turns += int(row["turns"])
        if row["end_reason"] is not None:
            ended[row["end_reason"]] = ended.get(row["end_reason"], 0) + row["n"]
    await cursor.execute(queries.STATS_LIVE_DELIVERED)
    delivered = {row["provider"]: int(row["delivered"]) for row in await cursor.fetchall()}
    await cursor.execute(queries.STATS_FAILING_CURSORS)
    failing = {row["provider"]: row["n"] for row in await cursor.fetchall()}
    await cursor.execute(queries.STATS_DEAD_LETTERS)
    letters = {(row["kind"], row["provider"]): row["n"] for row in await cursor.fetchall()}
    await cursor.execute(queries.STATS_COMMIT_DELAYS, params)
    delays = tuple(float(row["delay"]) for row in await cursor.fetchall())
    await cursor.execute(queries.STATS_DATABASE_SIZE)
    size = await cursor.fetchone()
    return StoreStats(
        sessions=by_state,
        ended=ended,
        turns=turns,
        live_turns=live_turns,
        live_delivered=delivered,
        failing_cursors=failing,
        dead_letters=letters,
        commit_delays=delays,
        size_bytes=None if size is None else int(size["size"]),
    )


def outbox_stats_from(counts: Sequence[dict[str, Any]], oldest: datetime | None) -> OutboxStats:
    """`OutboxStats` from job counts by kind and state, and the oldest pending time."""
    totals = dict.fromkeys(JobState, 0)
    by_kind: dict[str, dict[str, int]] = {}
    for row in counts:
        state = JobState(row["state"])
        totals[state] += row["n"]
        by_kind.setdefault(row["kind"], {})[state.value] = row["n"]
    return OutboxStats(
        pending=totals[JobState.PENDING],
        running=totals[JobState.RUNNING],
        dead=totals[JobState.DEAD],
        done=totals[JobState.DONE],
        oldest_pending_at=oldest,
        by_kind=by_kind,
    )
