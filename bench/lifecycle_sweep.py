"""The sweep: find the due reset timers among many stored sessions, and end them.

For each store size (default 10k and 1M stored sessions, the same 1,000 due; the
mix is described in `lifecycle_seed`), and for a control store holding the
largest store's chats with one active session each (same timers, a fifth of the
sessions), a fresh store is filled and then:

1. `store.claim_timers(owner, limit=due)` is timed `--claims` times; after each,
   the claimed timers are released unchanged (`release_timer` with their own due
   time), so every claim finds the same due set. This is what "one sweep finds
   them" costs.
2. One `Sweeper.sweep_once()` with `SweeperSettings(batch=due, max_rate=None)` is
   timed: it claims the same timers and ends each session through
   `Engine.end_session` (reason `idle`, with one memory provider configured, so
   each end enqueues its commit, `session:end` and finalize jobs). The default
   `max_rate=200` paces a catch-up to 200 ends a second on purpose, which alone
   would make 1,000 ends take 5 s; pacing is switched off to show the work itself.

Also shown: the query plan each store uses for the claim statement.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from rich.console import Console

import lifecycle_seed
from lifecycle_seed import IDLE, Mix
from lifecycle_support import POSTGRES, SQLITE, Backends, Report, Target, ms
from sessiongate.clock import SystemClock, system_random
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.lifecycle.sweeper import Sweeper, SweeperSettings
from sessiongate.models import SessionState
from sessiongate.policy import ResetMode, ResetPolicy, ResetRules
from sessiongate.store import Store, open_store
from sessiongate.store.postgres import queries as pg_queries
from sessiongate.store.sqlite import queries as sqlite_queries

SETTINGS = LifecycleSettings(
    reset=ResetRules(default=ResetPolicy(mode=ResetMode.IDLE, idle=IDLE)), providers=("fake",)
)
LEASE = 30.0
_COST = re.compile(r"\s*\(cost=[^)]*\)")
_ACCESS = re.compile(r"scan|search", re.IGNORECASE)


@dataclass
class Seeded:
    """How a store was filled."""

    method: str
    seconds: float
    sessions: int
    api_calls: int


@dataclass
class Swept:
    """The figures of one store size on one backend."""

    backend: str
    stored: int
    active: int
    due: int
    seeded: Seeded
    claims: list[float] = field(default_factory=list)
    claimed: list[int] = field(default_factory=list)
    sweep_seconds: float = 0.0
    ended: int = 0
    ending_after: int = 0
    still_due_after: bool = False
    plan: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "stored_sessions": self.stored,
            "active_sessions": self.active,
            "due": self.due,
            "seeding": vars(self.seeded),
            "claim_seconds": self.claims,
            "claimed": self.claimed,
            "sweep_once_seconds": self.sweep_seconds,
            "ended": self.ended,
            "ending_after": self.ending_after,
            "still_due_after": self.still_due_after,
            "plan": self.plan,
        }


def engine_for(store: Store) -> Engine:
    clock = SystemClock()
    return Engine(store, SETTINGS, clock=clock, ids=IdGenerator(clock, system_random()))


async def seed(target: Target, mix: Mix, method: str, concurrency: int) -> tuple[Target, Seeded]:
    """Fill the store of `target` with `mix`; the target to use afterwards and how long it took."""
    started = time.perf_counter()
    if method == "api":
        calls = await lifecycle_seed.seed_api(
            target.store, engine_for(target.store), mix, concurrency=concurrency
        )
    elif target.path is not None:
        # The bulk rows go in while the store is closed; the store is opened again after.
        await target.store.close()
        await asyncio.to_thread(
            lifecycle_seed.seed_bulk_sqlite, target.path, engine_for(target.store), mix
        )
        target = Target(target.backend, target.url, await open_store(target.url), target.path)
        calls = 0
    else:
        await lifecycle_seed.seed_bulk_postgres(target.url, engine_for(target.store), mix)
        calls = 0
    if target.backend == POSTGRES:
        # What autovacuum does on its own after a load; the planner needs the statistics.
        async with await psycopg.AsyncConnection.connect(target.url, autocommit=True) as conn:
            await conn.execute("ANALYZE")
    return target, Seeded(method, time.perf_counter() - started, mix.sessions, calls)


async def claim_rounds(store: Store, due: int, rounds: int) -> tuple[list[float], list[int]]:
    """Time `rounds` claims of the due timers, releasing them unchanged after each."""
    clock = SystemClock()
    times: list[float] = []
    counts: list[int] = []
    for number in range(rounds):
        owner = f"probe-{number}"
        at = clock.now()
        started = time.perf_counter()
        timers = await store.claim_timers(owner, at=at, lease_seconds=LEASE, limit=due)
        times.append(time.perf_counter() - started)
        counts.append(len(timers))
        await asyncio.gather(
            *(
                store.release_timer(t.session_id, t.kind, owner, reschedule_at=t.due_at)
                for t in timers
            )
        )
    return times, counts


async def sweep(store: Store, due: int) -> tuple[float, int]:
    """One timed `sweep_once` over the due timers; seconds and sessions ended."""
    clock = SystemClock()
    sweeper = Sweeper(
        engine_for(store),
        owner="bench-sweeper",
        clock=clock,
        settings=SweeperSettings(batch=due, lease_seconds=LEASE, max_rate=None),
    )
    started = time.perf_counter()
    ended = await sweeper.sweep_once()
    return time.perf_counter() - started, ended


async def claim_plan(target: Target, due: int) -> list[str]:
    """The lines of the claim statement's query plan that read the timers table."""
    now_us = int(time.time() * 1_000_000)
    if target.path is not None:
        params = {"owner": "plan", "lease_expires_at": now_us, "at": now_us, "limit": due}
        reader = sqlite3.connect(f"file:{target.path}?mode=ro", uri=True)
        try:
            rows = reader.execute("EXPLAIN QUERY PLAN " + sqlite_queries.CLAIM_TIMERS, params)
            lines = [str(row[3]) for row in rows]
        finally:
            reader.close()
    else:
        at = SystemClock().now()
        params_pg = {"owner": "plan", "lease_expires_at": at, "at": at, "limit": due}
        async with await psycopg.AsyncConnection.connect(target.url) as conn:
            cursor = psycopg.AsyncClientCursor(conn)
            await cursor.execute("EXPLAIN " + pg_queries.CLAIM_TIMERS, params_pg)
            lines = [str(row[0]).strip() for row in await cursor.fetchall()]
    # Only the access paths, without the cost estimates.
    steps = [_COST.sub("", line).lstrip("-> ").strip() for line in lines]
    return [step for step in steps if "timers" in step and _ACCESS.search(step)]


async def measure(
    backends: Backends, backend: str, mix: Mix, method: str, args: argparse.Namespace
) -> Swept:
    """Seed a fresh store with `mix`, then time the claims and one sweep."""
    async with backends.fresh(backend, f"sweep-{mix.sessions}") as fresh:
        target, seeded = await seed(fresh, mix, method, args.seed_concurrency)
        try:
            result = Swept(backend, mix.sessions, mix.chats, mix.due, seeded)
            result.plan = await claim_plan(target, mix.due)
            result.claims, result.claimed = await claim_rounds(target.store, mix.due, args.claims)
            result.sweep_seconds, result.ended = await sweep(target.store, mix.due)
            ending = await target.store.list_sessions(state=SessionState.ENDING, limit=2 * mix.due)
            result.ending_after = len(ending)
            next_due = await target.store.next_timer_due()
            result.still_due_after = next_due is not None and next_due <= SystemClock().now()
        finally:
            if target is not fresh:
                await target.store.close()
    return result


def _mixes(sizes: list[int], args: argparse.Namespace) -> list[Mix]:
    """The stores to measure: each size, plus the control store of the largest one.

    The control holds the same chats as the largest store, one active session each
    and nothing else: the same timers table, the same due set in the same places,
    a fifth of the stored sessions. Equal claim times there mean the stored
    sessions themselves cost nothing; only the due timers and where they lie do.
    """
    now = SystemClock().now()
    mixes = [Mix(size, args.due, args.per_chat, now) for size in sorted(sizes)]
    largest = mixes[-1]
    if args.control and largest.per_chat > 1:
        mixes.insert(-1, Mix(largest.chats, args.due, 1, now))
    return mixes


async def bench(backends: Backends, args: argparse.Namespace, console: Console) -> list[Report]:
    """Every size on every backend; the sweep table and the seeding table."""
    results: list[Swept] = []
    for backend in backends.names:
        sizes = args.sizes if backend == SQLITE else args.pg_sizes
        choice = args.sqlite_seeding if backend == SQLITE else args.pg_seeding
        for mix in _mixes(sizes, args):
            method = choice
            if choice == "auto":
                method = "api" if mix.sessions <= args.api_upto else "bulk"
            result = await measure(backends, backend, mix, method, args)
            console.print(
                f"  {backend} @ {mix.sessions:,} ({mix.chats:,} active): seeded ({method}) in "
                f"{result.seeded.seconds:.1f} s, claim {ms(min(result.claims))} ms, "
                f"sweep_once {result.sweep_seconds:.2f} s"
            )
            results.append(result)
    return [_sweep_report(results, args), _seed_report(results)]


def _sweep_report(results: list[Swept], args: argparse.Namespace) -> Report:
    report = Report(
        title=f"sweep: claim the {args.due:,} due timers among the stored sessions",
        columns=[
            "store",
            "stored sessions",
            "active (timers)",
            "claimed",
            "claim ms, 1st",
            "claim ms, median",
            "claim ms, max",
            "sweep_once s",
            "ended",
            "due left",
        ],
    )
    for r in results:
        report.rows.append(
            [
                r.backend,
                f"{r.stored:,}",
                f"{r.active:,}",
                "/".join(f"{n:,}" for n in sorted(set(r.claimed))),
                ms(r.claims[0]),
                ms(statistics.median(r.claims)),
                ms(max(r.claims)),
                f"{r.sweep_seconds:.2f}",
                f"{r.ended:,}",
                "yes" if r.still_due_after else "none",
            ]
        )
        report.data.append(r.figures())
        verdict = "met" if max(r.claims) < args.sweep_target else "MISSED"
        report.notes.append(
            f"{r.backend} @ {r.stored:,}: slowest claim {max(r.claims):.3f} s against "
            f"< {args.sweep_target:g} s: {verdict}; plan: {' | '.join(r.plan)}"
        )
    for backend in dict.fromkeys(r.backend for r in results):
        mine = [r for r in results if r.backend == backend]
        for small, large in itertools.pairwise(mine):
            ratio = statistics.median(large.claims) / statistics.median(small.claims)
            report.notes.append(
                f"{backend}: median claim at {large.stored:,} stored ({large.active:,} active) / "
                f"at {small.stored:,} stored ({small.active:,} active) = {ratio:.2f}x"
            )
    return report


def _seed_report(results: list[Swept]) -> Report:
    report = Report(
        title="seeding the sweep stores",
        columns=[
            "store",
            "stored sessions",
            "active",
            "method",
            "seconds",
            "sessions/s",
            "API calls",
        ],
    )
    for r in results:
        s = r.seeded
        report.rows.append(
            [
                r.backend,
                f"{s.sessions:,}",
                f"{r.active:,}",
                s.method,
                f"{s.seconds:.1f}",
                f"{s.sessions / s.seconds:,.0f}",
                f"{s.api_calls:,}",
            ]
        )
    return report
