"""`GET /metrics`: Prometheus metrics read from the store at every scrape.

Every figure is counted in the store when Prometheus asks, never kept in
process counters: several replicas share one store, so per-process counters
would disagree with each other and reset at every restart, while the store's
figures are the same whichever replica is scraped. That makes every metric a
gauge (pruning and redrives lower them), including the end-to-commit
histogram, which covers the sessions finalized within a recent window (a
gauge histogram: read it with `histogram_quantile` over its buckets as they
are, not over `rate()`). The metrics and their meaning: `docs/operations.md`.

prometheus-client's `Collector.collect` is synchronous and the store is async,
so a scrape first reads one `Snapshot` from the store, then hands it to a
`SnapshotCollector` in a registry of its own, which renders it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from sessiongate.clock import Clock
from sessiongate.config import MetricsSettings
from sessiongate.errors import StoreError
from sessiongate.models import EndReason, JobState, OutboxStats, StoreStats
from sessiongate.platforms.access import Access
from sessiongate.policy import parse_duration
from sessiongate.store.base import Store

log = logging.getLogger(__name__)

PREFIX = "sessiongate"
# Upper bounds (seconds) of the end-to-commit buckets: a healthy commit takes
# seconds; minutes mean a provider outage and retries.
COMMIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# The most finalized sessions the end-to-commit histogram reads per scrape.
COMMIT_SAMPLE = 1000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape read from the store (`stats` is None when the store failed)."""

    at: datetime
    providers: tuple[str, ...]
    read_seconds: float
    stats: StoreStats | None = None
    outbox: OutboxStats | None = None
    next_timer_due: datetime | None = None


async def read_snapshot(
    store: Store, *, at: datetime, providers: Sequence[str], window: timedelta
) -> Snapshot:
    """Read every figure of one scrape; a failing store gives a snapshot without them."""
    started = time.perf_counter()
    try:
        stats = await store.stats(ended_since=at - window, limit=COMMIT_SAMPLE)
        outbox = await store.outbox_stats()
        next_timer = await store.next_timer_due()
    except StoreError as exc:
        # A scrape must still answer, with store_up 0, so the outage itself is alerted on.
        log.warning("metrics: the store could not be read: %s", exc)
        return Snapshot(at, tuple(providers), time.perf_counter() - started)
    return Snapshot(at, tuple(providers), time.perf_counter() - started, stats, outbox, next_timer)


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


class SnapshotCollector(Collector):
    """Renders one `Snapshot` as Prometheus metric families."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Every metric family of the snapshot (only `store_up` and timing if the store failed)."""
        snap = self._snapshot
        up = _gauge("store_up", "1 if this scrape could read the store, else 0.")
        up.add_metric([], 0.0 if snap.stats is None else 1.0)
        yield up
        took = _gauge("scrape_store_seconds", "Seconds this scrape spent reading the store.")
        took.add_metric([], snap.read_seconds)
        yield took
        if snap.stats is None or snap.outbox is None:
            return
        yield from _sessions(snap.stats)
        yield _commit_histogram(snap.stats.commit_delays)
        yield from _outbox(snap.outbox, snap.at)
        yield from _providers(snap.stats, snap.providers)
        yield _dead_letters(snap.stats, snap.outbox)
        lag = _gauge("timer_lag_seconds", "Seconds the earliest due timer is overdue (0: none).")
        lag.add_metric([], _overdue(snap.next_timer_due, snap.at))
        yield lag
        if snap.stats.size_bytes is not None:
            size = _gauge("store_size_bytes", "Bytes the store's database takes.")
            size.add_metric([], float(snap.stats.size_bytes))
            yield size


def _overdue(due: datetime | None, at: datetime) -> float:
    return 0.0 if due is None else max(0.0, (at - due).total_seconds())


def _sessions(stats: StoreStats) -> Iterator[Metric]:
    sessions = _gauge("sessions", "Sessions kept in the store, by state.", ["state"])
    for state, count in sorted(stats.sessions.items()):
        sessions.add_metric([state], float(count))
    yield sessions
    ended = _gauge(
        "sessions_ended",
        "Ended sessions kept in the store, by the reason of their (last) end.",
        ["reason"],
    )
    for reason in EndReason:
        ended.add_metric([reason.value], float(stats.ended.get(reason.value, 0)))
    yield ended
    turns = _gauge("ledger_entries", "Ledger entries (turns) of every session kept.")
    turns.add_metric([], float(stats.turns))
    yield turns


def _commit_histogram(delays: Sequence[float]) -> Metric:
    buckets = [
        (_le(bound), float(sum(1 for d in delays if d <= bound))) for bound in COMMIT_BUCKETS
    ]
    buckets.append(("+Inf", float(len(delays))))
    return GaugeHistogramMetricFamily(
        f"{PREFIX}_end_to_commit_seconds",
        "Seconds from a session's end to its last provider commit, over the sessions "
        "finalized within the commit window.",
        buckets=buckets,
        gsum_value=float(sum(delays)),
    )


def _le(bound: float) -> str:
    return repr(float(bound))


def _outbox(outbox: OutboxStats, at: datetime) -> Iterator[Metric]:
    jobs = _gauge("outbox_jobs", "Outbox jobs by kind and state.", ["kind", "state"])
    for kind, states in sorted(outbox.by_kind.items()):
        for state in JobState:
            jobs.add_metric([kind, state.value], float(states.get(state.value, 0)))
    yield jobs
    oldest = _gauge(
        "outbox_oldest_due_seconds",
        "Seconds the oldest pending job has been due without running (0: none).",
    )
    oldest.add_metric([], _overdue(outbox.oldest_pending_at, at))
    yield oldest


def _providers(stats: StoreStats, configured: Sequence[str]) -> Iterator[Metric]:
    names = set(configured) | set(stats.live_delivered) | set(stats.failing_cursors)
    lag = _gauge(
        "provider_undelivered_turns",
        "Ledger entries of live (active or ending) sessions not yet delivered to the provider.",
        ["provider"],
    )
    failing = _gauge(
        "provider_failing_cursors",
        "Sessions whose last delivery or commit to the provider failed.",
        ["provider"],
    )
    dead = _gauge(
        "provider_dead_jobs",
        "Dead letters of memory jobs (commits, forgets) for the provider.",
        ["provider"],
    )
    dead_by_provider: dict[str, int] = {}
    for (_, provider), count in stats.dead_letters.items():
        if provider:
            dead_by_provider[provider] = dead_by_provider.get(provider, 0) + count
    for name in sorted(names | set(dead_by_provider)):
        undelivered = max(0, stats.live_turns - stats.live_delivered.get(name, 0))
        lag.add_metric([name], float(undelivered))
        failing.add_metric([name], float(stats.failing_cursors.get(name, 0)))
        dead.add_metric([name], float(dead_by_provider.get(name, 0)))
    yield from (lag, failing, dead)


def _dead_letters(stats: StoreStats, outbox: OutboxStats) -> Metric:
    letters = _gauge("dead_letters", "Dead letters waiting for a redrive, by job kind.", ["kind"])
    # Every kind the outbox holds gets a sample, 0 included, so alerts see it go up.
    by_kind = dict.fromkeys(outbox.by_kind, 0)
    for (kind, _), count in stats.dead_letters.items():
        by_kind[kind] = by_kind.get(kind, 0) + count
    for kind, count in sorted(by_kind.items()):
        letters.add_metric([kind], float(count))
    return letters


def render(snapshot: Snapshot, accept: str = "") -> tuple[bytes, str]:
    """The exposition of `snapshot` in the format `accept` asks for, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class Metrics:
    """The `/metrics` platform (routes only)."""

    name = "metrics"

    def __init__(
        self,
        store: Store,
        access: Access,
        settings: MetricsSettings,
        *,
        providers: Sequence[str],
        clock: Clock,
    ) -> None:
        self._store = store
        self._access = access
        self._settings = settings
        self._providers = tuple(providers)
        self._clock = clock
        self._window = parse_duration(settings.commit_window, what="commit_window")

    def routes(self) -> Sequence[BaseRoute]:
        """`GET /metrics`."""
        return [Route("/metrics", self.scrape, methods=["GET"])]

    async def run(self, stop: asyncio.Event) -> None:
        """Nothing to receive: the route does the work."""
        return

    def _allows(self, request: Request) -> bool:
        if self._settings.token_env is None:
            return self._access.allows(request)
        expected = self._settings.access_token()
        header = request.headers.get("authorization", "")
        if expected is None or not header.lower().startswith("bearer "):
            return False  # a configured but unset token refuses everyone: fail closed
        return hmac.compare_digest(header[7:].strip().encode(), expected.encode())

    async def scrape(self, request: Request) -> Response:
        """One scrape: read the store, render the metrics."""
        if not self._allows(request):
            return PlainTextResponse(
                "a valid token is required (Authorization: Bearer …)", status_code=401
            )
        snapshot = await read_snapshot(
            self._store, at=self._clock.now(), providers=self._providers, window=self._window
        )
        body, content_type = render(snapshot, request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
