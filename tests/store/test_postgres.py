"""The PostgreSQL store as several replicas see it: one database, many connections.

The shared contract suite covers the protocol's semantics; these tests cover what
only a server shared by separate processes can get wrong: concurrent claims,
ordering keys across claimers, racing migrations, races on finalization, and the
error boundary (unreachable server, newer schema, refused input).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sessiongate.errors import (
    Conflict,
    InvalidInput,
    SchemaError,
    StoreError,
    StoreUnavailable,
)
from sessiongate.models import (
    ChatType,
    EndReason,
    EndRequest,
    JobState,
    NewEntry,
    NewJob,
    Role,
    Session,
    SessionState,
    Timer,
)
from sessiongate.store import open_store
from sessiongate.store.migrations import latest_version
from sessiongate.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def a_session(session_id: str, key: str | None = None) -> Session:
    return Session(
        id=session_id,
        key=key or f"agent:main:test:dm:{session_id}",
        platform="test",
        chat_id=session_id,
        chat_type=ChatType.DM,
        created_at=NOW,
        last_activity_at=NOW,
    )


def a_job(
    key: str,
    *,
    ordering_key: str | None = None,
    session_id: str | None = None,
    gates_finalize: bool = False,
    payload: dict[str, Any] | None = None,
) -> NewJob:
    return NewJob(
        kind="deliver",
        idempotency_key=key,
        payload=payload or {},
        session_id=session_id,
        ordering_key=ordering_key,
        gates_finalize=gates_finalize,
    )


@pytest.fixture
async def replicas(pg_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two gateway replicas would open it."""
    first = await PostgresStore.open(pg_dsn)
    second = await PostgresStore.open(pg_dsn)
    try:
        await first.migrate()
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_concurrent_claimers_get_disjoint_jobs(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    ids = await a.enqueue([a_job(f"job-{n}") for n in range(60)], at=NOW)

    async def drain(store: PostgresStore, owner: str) -> list[int]:
        got: list[int] = []
        while batch := await store.claim_jobs(owner, at=NOW, lease_seconds=60, limit=3):
            got.extend(job.id for job in batch)
        return got

    claims = await asyncio.gather(
        drain(a, "a1"), drain(a, "a2"), drain(b, "b1"), drain(b, "b2"), drain(b, "b3")
    )
    everything = [job_id for claimed in claims for job_id in claimed]
    assert sorted(everything) == sorted(ids)  # every job once, none twice
    running = await b.list_jobs(state=JobState.RUNNING, limit=1000)
    assert {job.fencing_token for job in running} == {1}


async def test_ordering_key_holds_across_replicas(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    first, second = await a.enqueue(
        [a_job("s1-turns-1", ordering_key="s1"), a_job("s1-turns-2", ordering_key="s1")], at=NOW
    )
    both = await asyncio.gather(
        a.claim_jobs("a", at=NOW, lease_seconds=60, limit=10),
        b.claim_jobs("b", at=NOW, lease_seconds=60, limit=10),
    )
    claimed = [job.id for batch in both for job in batch]
    assert claimed == [first]
    holder = a if both[0] else b
    other = b if holder is a else a
    assert await other.claim_jobs("o", at=NOW, lease_seconds=60, limit=10) == []
    [job] = [job for batch in both for job in batch]
    assert await holder.complete_job(job.id, job.fencing_token, at=NOW)
    [after] = await other.claim_jobs("o", at=NOW, lease_seconds=60, limit=10)
    assert after.id == second


async def test_ordering_key_excludes_later_job_while_earlier_is_locked(
    replicas: tuple[PostgresStore, PostgresStore], pg_dsn: str
) -> None:
    """A claimer mid-transaction holds the earlier job; the later one must stay out."""
    a, b = replicas
    first, _second, free = await a.enqueue(
        [a_job("k-1", ordering_key="k"), a_job("k-2", ordering_key="k"), a_job("free")], at=NOW
    )
    async with await psycopg.AsyncConnection.connect(pg_dsn) as other_claimer:
        # Lock the first job exactly as CLAIM_JOBS does, and keep the transaction open.
        await other_claimer.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (first,))
        claimed = await b.claim_jobs("b", at=NOW, lease_seconds=60, limit=10)
        assert [job.id for job in claimed] == [free]
        await other_claimer.rollback()
    [now_free] = await a.claim_jobs("a", at=NOW, lease_seconds=60, limit=10)
    assert now_free.id == first


async def test_expired_lease_is_reclaimed_once_with_a_new_token(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    await a.enqueue([a_job("lease")], at=NOW)
    [held] = await a.claim_jobs("a", at=NOW, lease_seconds=30, limit=1)
    later = NOW + timedelta(seconds=30)
    reclaims = await asyncio.gather(
        a.claim_jobs("a2", at=later, lease_seconds=30),
        b.claim_jobs("b", at=later, lease_seconds=30),
    )
    [reclaimed] = [job for batch in reclaims for job in batch]
    assert reclaimed.fencing_token == held.fencing_token + 1
    assert reclaimed.attempts == 2
    assert not await a.complete_job(held.id, held.fencing_token, at=later)
    assert await b.complete_job(reclaimed.id, reclaimed.fencing_token, at=later)


async def test_last_gating_jobs_completed_concurrently_finalize_the_session(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    for round_ in range(8):
        sid = f"fin-{round_}"
        await a.start_session(a_session(sid))
        gating = [a_job(f"{sid}-commit-{n}", session_id=sid, gates_finalize=True) for n in range(2)]
        await a.end_session(EndRequest(sid, EndReason.NEW, NOW, jobs=gating))
        one = await a.claim_jobs("a", at=NOW, lease_seconds=60, limit=1)
        two = await b.claim_jobs("b", at=NOW, lease_seconds=60, limit=1)
        [ja], [jb] = one, two
        done = await asyncio.gather(
            a.complete_job(ja.id, ja.fencing_token, at=NOW),
            b.complete_job(jb.id, jb.fencing_token, at=NOW),
        )
        assert list(done) == [True, True]
        session = await a.get_session(sid)
        assert session is not None
        assert session.state is SessionState.FINALIZED, f"round {round_}"


async def test_end_racing_the_last_gating_job_never_leaves_the_session_ending(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    for round_ in range(8):
        sid = f"race-{round_}"
        await a.start_session(
            a_session(sid), jobs=[a_job(f"{sid}-gate", session_id=sid, gates_finalize=True)]
        )
        [job] = await b.claim_jobs("b", at=NOW, lease_seconds=60, limit=1)
        ended, completed = await asyncio.gather(
            a.end_session(EndRequest(sid, EndReason.IDLE, NOW)),
            b.complete_job(job.id, job.fencing_token, at=NOW),
        )
        assert ended
        assert completed
        session = await b.get_session(sid)
        assert session is not None
        assert session.state is SessionState.FINALIZED, f"round {round_}"


async def test_two_replicas_opening_one_conversation_route_exactly_one(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    key = "agent:main:test:dm:shared"
    results = await asyncio.gather(
        a.start_session(a_session("left", key)),
        b.start_session(a_session("right", key)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 1
    routed = await b.routed_session(key)
    assert routed is not None
    assert routed.id == winners[0].id
    assert [s.id for s in await a.list_sessions(key=key)] == [winners[0].id]


async def test_concurrent_appends_get_dense_seqs(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    await a.start_session(a_session("busy"))

    async def write(store: PostgresStore, who: str) -> None:
        for n in range(10):
            entries = [NewEntry(Role.USER, f"{who}-{n}"), NewEntry(Role.ASSISTANT, "ok")]
            await store.append_entries("busy", entries, at=NOW)

    await asyncio.gather(write(a, "a"), write(b, "b"), write(a, "c"))
    ledger = await b.entries("busy")
    assert [e.seq for e in ledger] == list(range(1, 61))
    session = await a.get_session("busy")
    assert session is not None
    assert session.turn_count == 60


async def test_concurrent_timer_claims_are_disjoint(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    for n in range(30):
        await a.set_timer(Timer(f"t{n}", "idle", NOW - timedelta(minutes=n)))
    batches = await asyncio.gather(
        *(
            store.claim_timers(f"owner-{i}", at=NOW, lease_seconds=60, limit=4)
            for i, store in enumerate([a, b, a, b, a, b, a, b, a, b])
        )
    )
    claimed = [(t.session_id, t.kind) for batch in batches for t in batch]
    assert len(claimed) == len(set(claimed)) == 30


async def test_replicas_migrating_at_once_both_succeed(pg_dsn: str) -> None:
    stores = [await PostgresStore.open(pg_dsn) for _ in range(3)]
    try:
        assert [await s.schema_version() for s in stores] == [0, 0, 0]
        reached = await asyncio.gather(*(s.migrate() for s in stores))
        assert reached == [latest_version("postgres")] * 3
        assert await stores[0].migrate() == latest_version("postgres")  # idempotent
    finally:
        for store in stores:
            await store.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, latest_version("postgres") + 1))


async def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    store = await open_store(pg_dsn)
    await store.close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (999, 'from_the_future', now())"
        )
    with pytest.raises(SchemaError, match=r"999.*newer"):
        await open_store(pg_dsn)
    newer = await PostgresStore.open(pg_dsn)
    try:
        assert await newer.schema_version() == 999
        with pytest.raises(SchemaError, match="upgrade sessiongate"):
            await newer.migrate()
    finally:
        await newer.close()


async def test_an_unreachable_server_is_named_without_its_password() -> None:
    dsn = "postgresql://gateway:hunter2-secret@127.0.0.1:1/sessiongate"
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(dsn)
    message = str(caught.value)
    assert "hunter2-secret" not in message
    assert "postgresql://gateway:***@127.0.0.1:1/sessiongate" in message
    assert "refused" in message.lower()
    assert "server is running" in message
    assert caught.value.__cause__ is None  # the driver's exception is not chained in


async def test_an_unknown_database_says_what_to_do(pg_server: str) -> None:
    base, _, _ = pg_server.rpartition("/")
    with pytest.raises(StoreUnavailable, match=r"sg_no_such_db.*does not exist.*createdb"):
        await PostgresStore.open(f"{base}/sg_no_such_db?password=topsecret")


async def test_a_password_in_the_query_string_is_redacted_too() -> None:
    dsn = "postgresql://127.0.0.1:1/db?user=x&password=topsecret"
    with pytest.raises(StoreUnavailable) as caught:
        await PostgresStore.open(dsn)
    assert "topsecret" not in str(caught.value)
    assert "password=***" in str(caught.value)


async def test_nul_and_lone_surrogates_are_refused_and_nothing_is_written(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = replicas
    await a.start_session(a_session("clean"))
    for bad in ["nul\x00byte", "lone \ud800 surrogate"]:
        with pytest.raises(InvalidInput):
            await a.append_entries(
                "clean", [NewEntry(Role.USER, "fine"), NewEntry(Role.USER, bad)], at=NOW
            )
        with pytest.raises(InvalidInput):
            await a.append_entries(
                "clean", [NewEntry(Role.USER, "ok", parts=[{"tool": bad}])], at=NOW
            )
        with pytest.raises(InvalidInput):
            await a.enqueue([a_job("good"), a_job("bad", payload={"x": bad})], at=NOW)
        with pytest.raises(InvalidInput):
            await a.start_session(a_session("other"), jobs=[a_job(bad)])
    assert await a.entries("clean") == []
    assert await a.list_jobs() == []
    assert await a.get_session("other") is None
    session = await a.get_session("clean")
    assert session is not None
    assert session.turn_count == 0


async def test_error_texts_with_nul_are_stored_not_refused(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = replicas
    await a.enqueue([a_job("fails")], at=NOW)
    [job] = await a.claim_jobs("a", at=NOW, lease_seconds=60)
    assert await a.bury_job(job.id, job.fencing_token, error="bad\x00reply \udc80", at=NOW)
    [letter] = await a.dead_letters()
    assert letter.last_error == "bad\ufffdreply \ufffd"


async def test_times_come_back_in_utc_whatever_the_server_zone(pg_dsn: str) -> None:
    name = pg_dsn.rpartition("/")[2]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Tokyo'")
    store = await open_store(pg_dsn)
    try:
        local = NOW.astimezone(UTC).replace(tzinfo=UTC) + timedelta(microseconds=7)
        await store.set_timer(Timer("tz", "daily", local))
        [timer] = await store.timers("tz")
        assert timer.due_at == local
        assert timer.due_at.tzinfo is UTC
    finally:
        await store.close()


async def test_driver_failures_surface_as_store_errors(
    replicas: tuple[PostgresStore, PostgresStore], pg_dsn: str
) -> None:
    a, b = replicas
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE timers")
    with pytest.raises(StoreError, match="timers"):
        await a.timers("anything")
    await b.close()
    await b.close()  # closing twice is harmless
    with pytest.raises(StoreError, match="closed"):
        await b.get_session("anything")
