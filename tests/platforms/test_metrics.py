"""`GET /metrics` as Prometheus scrapes it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway.conftest import settings_for
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import OutboxStats, StoreStats
from sessiongate.platforms.metrics import Snapshot, read_snapshot, render
from sessiongate.testing import new_job
from sessiongate.testing.serving import serving

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/sg.db"
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A gateway serving on a free loopback port over each SQL store."""
    url = _store_url(request.param, tmp_path, request)
    async with serving(settings_for(url, tmp_path)) as process:
        yield process


async def _say(client: httpx.AsyncClient, user: str, text: str) -> None:
    body = {"chat_id": f"c-{user}", "user_id": user, "text": text}
    response = await client.post("/api/v1/messages", json=body)
    assert response.status_code == 200, response.text


async def _scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def _settled(process: GatewayProcess, client: httpx.AsyncClient) -> Samples:
    """Scrape once every job that can run has run (the served worker runs beside us)."""
    for _ in range(200):
        await process.lifecycle.drain()
        stats = await process.store.outbox_stats()
        if stats.pending == 0 and stats.running == 0:
            return await _scrape(client)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the outbox never settled: {stats}")


async def test_a_scrape_after_a_conversation_reports_the_store(served: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as client:
        for text in ("hello", "my name is Ada", "/new", "again"):
            await _say(client, "alice", text)
        await _say(client, "bob", "hi")
        samples = await _settled(served, client)

    assert value(samples, "sessiongate_store_up") == 1
    assert value(samples, "sessiongate_sessions", state="active") == 2
    assert value(samples, "sessiongate_sessions", state="ending") == 0
    assert value(samples, "sessiongate_sessions", state="finalized") == 1
    assert value(samples, "sessiongate_sessions_ended", reason="new") == 1
    assert value(samples, "sessiongate_sessions_ended", reason="idle") == 0
    # Three exchanges of alice's, one of bob's: a user entry and a reply each.
    assert value(samples, "sessiongate_ledger_entries") == 8
    # The ended session's final commit ran; the live ones are not delivered yet.
    assert value(samples, "sessiongate_outbox_jobs", kind="memory.commit", state="done") == 1
    assert value(samples, "sessiongate_outbox_jobs", kind="hook.finalize", state="done") == 1
    assert value(samples, "sessiongate_outbox_jobs", kind="hook.event", state="pending") == 0
    assert value(samples, "sessiongate_outbox_oldest_due_seconds") == 0
    assert value(samples, "sessiongate_provider_undelivered_turns", provider="local") == 4
    assert value(samples, "sessiongate_provider_failing_cursors", provider="local") == 0
    assert value(samples, "sessiongate_provider_dead_jobs", provider="local") == 0
    assert value(samples, "sessiongate_dead_letters", kind="memory.commit") == 0
    assert value(samples, "sessiongate_end_to_commit_seconds_bucket", le="+Inf") == 1
    assert value(samples, "sessiongate_end_to_commit_seconds_gcount") == 1
    assert 0 <= value(samples, "sessiongate_end_to_commit_seconds_gsum") < 60
    assert value(samples, "sessiongate_end_to_commit_seconds_bucket", le="60.0") == 1
    assert value(samples, "sessiongate_timer_lag_seconds") == 0
    assert value(samples, "sessiongate_store_size_bytes") > 0


async def test_a_dead_job_shows_up_by_kind_and_provider(served: GatewayProcess) -> None:
    # No handler knows this kind: the worker buries it at its first attempt.
    job = new_job("orphan-1", kind="test.orphan", payload={"provider": "local"})
    await served.store.enqueue([job], at=datetime.now(UTC))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as client:
        samples = await _settled(served, client)
        assert value(samples, "sessiongate_dead_letters", kind="test.orphan") == 1
        assert value(samples, "sessiongate_outbox_jobs", kind="test.orphan", state="dead") == 1
        assert value(samples, "sessiongate_provider_dead_jobs", provider="local") == 1
        await served.store.redrive(None, at=datetime.now(UTC))
        samples = await _settled(served, client)
        # Redriven, it ran once more and died again: still one letter, never two.
        assert value(samples, "sessiongate_dead_letters", kind="test.orphan") == 1


async def test_openmetrics_is_served_to_scrapers_that_ask_for_it(
    tmp_path: Path,
) -> None:
    process = await GatewayProcess.open(settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path))
    transport = httpx.ASGITransport(app=process.app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get(
                "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
            )
    finally:
        await process.close()
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    parsed = openmetrics_families(response.text)  # type: ignore[no-untyped-call]
    families = {family.name: family for family in parsed}
    assert families["sessiongate_end_to_commit_seconds"].type == "gaugehistogram"
    assert families["sessiongate_sessions"].type == "gauge"


async def test_a_metrics_token_is_required_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_TEST_METRICS_TOKEN", "scrape-me")
    settings = settings_for(
        f"sqlite:///{tmp_path}/sg.db",
        tmp_path,
        platforms={"web": {"enabled": False}, "metrics": {"token_env": "SG_TEST_METRICS_TOKEN"}},
    )
    process = await GatewayProcess.open(settings)
    transport = httpx.ASGITransport(app=process.app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/metrics")).status_code == 401
            wrong = {"authorization": "Bearer nope"}
            assert (await client.get("/metrics", headers=wrong)).status_code == 401
            right = {"authorization": "Bearer scrape-me"}
            response = await client.get("/metrics", headers=right)
            assert response.status_code == 200
            assert value(parse(response.text), "sessiongate_store_up") == 1
            monkeypatch.delenv("SG_TEST_METRICS_TOKEN")
            # Configured but unset: nobody gets in (never open by accident).
            assert (await client.get("/metrics", headers=right)).status_code == 401
    finally:
        await process.close()


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    settings = settings_for(
        f"sqlite:///{tmp_path}/sg.db",
        tmp_path,
        platforms={"web": {"enabled": False}, "metrics": {"enabled": False}},
    )
    process = await GatewayProcess.open(settings)
    transport = httpx.ASGITransport(app=process.app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/metrics")).status_code == 404
    finally:
        await process.close()


async def test_a_store_that_cannot_be_read_reports_store_up_zero(tmp_path: Path) -> None:
    process = await GatewayProcess.open(settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path))
    await process.store.close()
    try:
        snapshot = await read_snapshot(
            process.store, at=datetime.now(UTC), providers=["local"], window=timedelta(hours=1)
        )
    finally:
        await process.close()
    samples = parse(render(snapshot)[0].decode())
    assert value(samples, "sessiongate_store_up") == 0
    assert not any(name == "sessiongate_sessions" for name, _ in samples)


def test_ages_and_lags_are_measured_from_the_scrape_time() -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    stats = StoreStats(
        sessions={"active": 3, "ending": 1, "finalized": 0},
        ended={"idle": 1},
        turns=20,
        live_turns=20,
        live_delivered={"local": 15, "ov": 20},
        failing_cursors={"ov": 1},
        dead_letters={("memory.commit", "ov"): 2, ("hook.event", ""): 1},
        commit_delays=(0.05, 3.0, 7200.0),
        size_bytes=None,
    )
    outbox = OutboxStats(1, 0, 3, 0, at - timedelta(seconds=42), {"memory.commit": {"dead": 2}})
    snapshot = Snapshot(at, ("local", "ov", "new"), 0.01, stats, outbox, at - timedelta(seconds=7))
    samples = parse(render(snapshot)[0].decode())
    assert value(samples, "sessiongate_outbox_oldest_due_seconds") == 42
    assert value(samples, "sessiongate_timer_lag_seconds") == 7
    assert value(samples, "sessiongate_provider_undelivered_turns", provider="local") == 5
    assert value(samples, "sessiongate_provider_undelivered_turns", provider="ov") == 0
    # A provider added to the config has received nothing of the live sessions yet.
    assert value(samples, "sessiongate_provider_undelivered_turns", provider="new") == 20
    assert value(samples, "sessiongate_provider_failing_cursors", provider="ov") == 1
    assert value(samples, "sessiongate_provider_dead_jobs", provider="ov") == 2
    assert value(samples, "sessiongate_dead_letters", kind="memory.commit") == 2
    assert value(samples, "sessiongate_dead_letters", kind="hook.event") == 1
    assert value(samples, "sessiongate_end_to_commit_seconds_bucket", le="0.1") == 1
    assert value(samples, "sessiongate_end_to_commit_seconds_bucket", le="5.0") == 2
    assert value(samples, "sessiongate_end_to_commit_seconds_bucket", le="3600.0") == 2
    assert value(samples, "sessiongate_end_to_commit_seconds_bucket", le="+Inf") == 3
    assert value(samples, "sessiongate_end_to_commit_seconds_gsum") == pytest.approx(7203.05)
    # The memory store has no size on disk: the metric is left out rather than 0.
    assert not any(name == "sessiongate_store_size_bytes" for name, _ in samples)
