"""Store contract: schema version, closing, and how times go in and come out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from sessiongate.errors import InvalidInput, StoreError
from sessiongate.models import EndReason, EndRequest, Timer
from sessiongate.store import Store, open_store
from sessiongate.store.migrations import latest_version
from sessiongate.testing import FakeClock, new_entry, new_job, new_session

_DIALECT = {"sqlite": "sqlite", "postgres": "postgres"}


async def test_schema_version_after_migrate(store: Store, store_kind: str) -> None:
    version = await store.schema_version()
    expected = latest_version(_DIALECT[store_kind]) if store_kind in _DIALECT else 1
    assert version == expected
    assert await store.migrate() == version
    assert await store.migrate() == version
    assert await store.schema_version() == version


async def test_a_closed_store_refuses_work(store: Store, clock: FakeClock) -> None:
    await store.start_session(new_session("s-1", at=clock.now()))
    await store.close()
    await store.close()
    with pytest.raises(StoreError):
        await store.get_session("s-1")
    with pytest.raises(StoreError):
        await store.enqueue([new_job("j")], at=clock.now())


async def test_memory_urls_open_independent_stores(clock: FakeClock) -> None:
    first = await open_store("memory://")
    second = await open_store("memory://")
    try:
        await first.start_session(new_session("s-1", at=clock.now()))
        assert await second.get_session("s-1") is None
    finally:
        await first.close()
        await second.close()


_ODD = datetime(2026, 7, 4, 23, 59, 58, 123457, tzinfo=timezone(timedelta(hours=5, minutes=30)))
_ZONED = datetime(2026, 1, 15, 18, 30, 0, 999999, tzinfo=ZoneInfo("America/New_York"))


def _same_instant_in_utc(got: datetime | None, given: datetime) -> None:
    assert got is not None
    assert got == given
    assert got.utcoffset() == timedelta(0)
    assert got.astimezone(UTC).replace(tzinfo=None) == given.astimezone(UTC).replace(tzinfo=None)
    assert got.microsecond == given.astimezone(UTC).microsecond


@pytest.mark.parametrize("given", [_ODD, _ZONED], ids=["offset", "zoneinfo"])
async def test_times_round_trip_in_utc_to_the_microsecond(store: Store, given: datetime) -> None:
    other = given + timedelta(microseconds=1)
    await store.start_session(new_session("s-1", at=given))
    [entry] = await store.append_entries("s-1", [new_entry("x")], at=other)
    [job_id] = await store.enqueue([new_job("j", run_after=other)], at=given)
    await store.set_timer(Timer("s-1", "reset", other))
    assert await store.advance_cursor("p", "s-1", expected_seq=0, delivered_seq=1, at=given)
    assert await store.record_commit("p", "s-1", epoch=1, committed_seq=1, at=other)

    session = await store.get_session("s-1")
    assert session is not None
    _same_instant_in_utc(session.created_at, given)
    _same_instant_in_utc(session.last_activity_at, other)
    _same_instant_in_utc(entry.created_at, other)
    [read] = await store.entries("s-1")
    _same_instant_in_utc(read.created_at, other)
    job = await store.get_job(job_id)
    assert job is not None
    _same_instant_in_utc(job.run_after, other)
    _same_instant_in_utc(job.created_at, given)
    [timer] = await store.timers("s-1")
    _same_instant_in_utc(timer.due_at, other)
    cursor = await store.get_cursor("p", "s-1")
    _same_instant_in_utc(cursor.last_commit_at, other)
    _same_instant_in_utc(cursor.updated_at, other)
    [claimed] = await store.claim_jobs("w", at=other, lease_seconds=0.000001)
    _same_instant_in_utc(claimed.lease_expires_at, other + timedelta(microseconds=1))
    assert await store.end_session(EndRequest("s-1", EndReason.NEW, at=given))
    ended = await store.get_session("s-1")
    assert ended is not None
    _same_instant_in_utc(ended.ended_at, given)


async def test_naive_times_are_refused(store: Store, clock: FakeClock) -> None:
    naive = datetime(2026, 3, 1, 12, 0)
    with pytest.raises(InvalidInput):
        await store.start_session(new_session("s-1", at=naive))
    assert await store.get_session("s-1") is None
    await store.start_session(new_session("s-1", at=clock.now()))
    with pytest.raises(InvalidInput):
        await store.append_entries("s-1", [new_entry("x")], at=naive)
    with pytest.raises(InvalidInput):
        await store.enqueue([new_job("j")], at=naive)
    with pytest.raises(InvalidInput):
        await store.enqueue([new_job("j", run_after=naive)], at=clock.now())
    with pytest.raises(InvalidInput):
        await store.set_timer(Timer("s-1", "reset", naive))
    with pytest.raises(InvalidInput):
        await store.end_session(EndRequest("s-1", EndReason.NEW, at=naive))
    assert await store.entries("s-1") == []
    assert await store.list_jobs() == []
    assert await store.timers("s-1") == []
    assert await store.routed_session("agent:main:telegram:dm:s-1") is not None
