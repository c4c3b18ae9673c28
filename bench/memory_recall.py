"""Recall latency of the local provider, and recall on a turn when a provider hangs.

- `recall`: the archives of many sessions are written through
  `ArchiveStore.archive_epoch` (what the local provider's commit does: one
  transaction per epoch, with its facts), the same archives into a SQLite and
  a PostgreSQL store. Then the same questions, each from a random user, are
  asked of `LocalProvider.recall` on both stores alternately, as the gateway
  asks before an agent turn (the user's scope, the asking session excluded).
  Every hit must belong to the asking user.
- `hanging`: `Recaller.recall` with its default deadline, on a turn: the local
  provider alone, and the local provider next to one that never answers
  (`FakeProvider` with a delay of thirty days), alternately. The local provider
  must answer on every turn and the hanging one be skipped on every turn.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from memory_corpus import Corpus, transcript
from memory_support import (
    PLATFORM,
    STATS_COLUMNS,
    SessionMaker,
    scratch_database,
    stats,
    table,
)
from sessiongate.memory.provider import MemoryProvider, RecallScope
from sessiongate.memory.recall import DEFAULT_DEADLINE, DEFAULT_LIMIT, Recaller
from sessiongate.memory.registry import build_providers
from sessiongate.store import Store, open_store
from sessiongate.store.archive import EpochArchive, archive_of
from sessiongate.testing import FakeProvider, Faults

FOREVER = 30 * 24 * 3600.0
"""The hanging provider's delay: it never answers within a run."""
OVERHEAD_ALLOWED = 0.05
"""How far past the deadline a recall may end (wake-ups, cancellation) and still meet it."""
SEED_CONCURRENCY = 16


def archives(corpus: Corpus, count: int, seed: int) -> list[tuple[EpochArchive, list[str]]]:
    """`count` one-epoch sessions (8 to 24 turns) of the corpus' users, over half a year."""
    rng = random.Random(seed)
    maker = SessionMaker()
    now = maker.clock.now()
    made: list[tuple[EpochArchive, list[str]]] = []
    for index in range(count):
        user = corpus.users[index % len(corpus.users)]
        turns = corpus.conversation(user, 2 * rng.randint(4, 12))
        at = now - timedelta(minutes=rng.randrange(180 * 24 * 60))
        archive = EpochArchive(
            user_id=user,
            platform=PLATFORM,
            session_id=maker.session(user, at).id,
            epoch=1,
            first_seq=1,
            last_seq=len(turns),
            text=transcript(turns),
            created_at=at,
        )
        made.append((archive, corpus.facts(user, turns)))
    return made


async def seed(store: Store, planned: Sequence[tuple[EpochArchive, list[str]]]) -> float:
    """Write the archives, `SEED_CONCURRENCY` at a time; the seconds it took."""
    archive = archive_of(store)
    pending = iter(planned)

    async def writer() -> None:
        for epoch, facts in pending:
            await archive.archive_epoch(epoch, facts=facts)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(SEED_CONCURRENCY)))
    return time.perf_counter() - started


@dataclass
class Series:
    """The timed recalls of one store and what they found."""

    name: str
    seed_seconds: float = 0.0
    seconds: list[float] = field(default_factory=list)
    hits: int = 0
    empty: int = 0


async def ask(
    lanes: Sequence[tuple[Series, MemoryProvider]],
    questions: Sequence[tuple[str, str]],
    owners: dict[str, str],
    warmup: int,
) -> None:
    """Each question of every lane, alternating which goes first; the first `warmup` untimed."""
    for index, (user, question) in enumerate(questions):
        scope = RecallScope(user_id=user, exclude_session_id=f"asking-{index}")
        for series, provider in lanes if index % 2 == 0 else reversed(lanes):
            started = time.perf_counter()
            hits = await provider.recall(scope, question, limit=DEFAULT_LIMIT)
            elapsed = time.perf_counter() - started
            if any(owners.get(hit.session_id or "") != user for hit in hits):
                raise AssertionError(f"{series.name}: recall for {user} found another user's")
            if index >= warmup:
                series.seconds.append(elapsed)
                series.hits += len(hits)
                series.empty += not hits


def postgres(args: argparse.Namespace) -> AbstractAsyncContextManager[str | None]:
    """A scratch database's DSN, or None when PostgreSQL is left out."""
    if args.no_postgres:
        return nullcontext(None)
    return scratch_database(args.pg_dsn)


async def recall(workdir: Path, args: argparse.Namespace, console: Console) -> list[Series]:
    """Seed both stores with the same archives, then time the same questions on both."""
    corpus = Corpus(args.users, seed=args.seed)
    planned = archives(corpus, args.archived, args.seed)
    owners = {epoch.session_id: epoch.user_id or "" for epoch, _ in planned}
    rng = random.Random(args.seed + 2)
    users = [rng.choice(corpus.users) for _ in range(args.queries + args.warmup)]
    questions = [(user, corpus.question(user)) for user in users]
    lanes: list[tuple[Series, MemoryProvider]] = []
    opened: list[Store] = []
    try:
        async with postgres(args) as dsn:
            urls = [("SQLite", f"sqlite:///{workdir / 'recall.db'}")]
            urls += [] if dsn is None else [("PostgreSQL", dsn)]
            for name, url in urls:
                store = await open_store(url)
                opened.append(store)
                console.print(f"recall: seeding {len(planned):,} archived sessions into {name} …")
                series = Series(name, seed_seconds=await seed(store, planned))
                console.print(f"  seeded in {series.seed_seconds:.1f} s")
                # As the configuration builds it: `memory.providers: {local: {}}`.
                lanes.append((series, build_providers({"local": {}}, store=store)["local"]))
            console.print(f"recall: {args.queries} questions (+{args.warmup} warm-up) each …")
            await ask(lanes, questions, owners, args.warmup)
            for store in opened:
                await store.close()
            opened.clear()
    finally:
        for store in opened:
            await store.close()
    return [series for series, _ in lanes]


def run_recall(workdir: Path, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    results = asyncio.run(recall(workdir, args, console))
    title = (
        f"recall: LocalProvider.recall, {args.archived:,} archived sessions of "
        f"{args.users} users, limit {DEFAULT_LIMIT}"
    )
    shown = table(title, ["store", "seeding s", *STATS_COLUMNS, "hits/recall", "empty"])
    rows: list[dict[str, Any]] = []
    for series in results:
        figures = stats(series.seconds)
        per = series.hits / len(series.seconds)
        shown.add_row(
            series.name, f"{series.seed_seconds:.1f}", *figures.cells(), f"{per:.1f}",
            f"{series.empty}",
        )  # fmt: skip
        rows.append({"store": series.name, "seed_seconds": series.seed_seconds,
                     "hits_per_recall": per, "empty": series.empty} | asdict(figures))  # fmt: skip
    console.print(shown)
    return {"archived": args.archived, "users": args.users, "results": rows}


# --- a provider that hangs ---------------------------------------------------------------


async def hanging(workdir: Path, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Recall wall times with and without a provider that never answers."""
    store = await open_store(f"sqlite:///{workdir / 'hanging.db'}")
    try:
        corpus = Corpus(args.users, seed=args.seed + 3)
        console.print(f"hanging: seeding {args.hanging_archived:,} archived sessions …")
        await seed(store, archives(corpus, args.hanging_archived, args.seed + 3))
        local = build_providers({"local": {}}, store=store)["local"]
        never = FakeProvider(name="never", faults=Faults(delay_seconds=FOREVER))
        healthy, stuck = Recaller([local]), Recaller([local, never])
        times: dict[str, list[float]] = {"healthy": [], "hanging": []}
        answered = skipped = 0
        rng = random.Random(args.seed + 4)
        console.print(f"hanging: {args.recalls} turns, deadline {stuck.deadline:.3f} s …")
        for index in range(args.recalls):
            user = rng.choice(corpus.users)
            scope = RecallScope(user_id=user, exclude_session_id=f"turn-{index}")
            question = corpus.question(user)
            pair = [("healthy", healthy), ("hanging", stuck)]
            for name, recaller in pair if index % 2 == 0 else reversed(pair):
                started = time.perf_counter()
                result = await recaller.recall(scope, question)
                times[name].append(time.perf_counter() - started)
                if name == "hanging":
                    answered += "local" in result.answered
                    skipped += result.skipped == ("never",)
        await asyncio.sleep(0)  # let the cancelled recalls finish
        leftover = len(asyncio.all_tasks()) - 1
    finally:
        await store.close()
    return {
        "deadline_s": stuck.deadline,
        "healthy": stats(times["healthy"]),
        "hanging": stats(times["hanging"]),
        "local_answered": answered,
        "hanging_skipped": skipped,
        "tasks_left": leftover,
    }


def run_hanging(workdir: Path, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    found = asyncio.run(hanging(workdir, args, console))
    healthy, stuck = found["healthy"], found["hanging"]
    deadline_ms = found["deadline_s"] * 1000
    shown = table(
        f"hanging: Recaller.recall wall time per turn, default deadline {deadline_ms:.0f} ms",
        ["providers", *STATS_COLUMNS],
    )
    shown.add_row("local only", *healthy.cells())
    shown.add_row("local + one that never answers", *stuck.cells())
    console.print(shown)
    over = stuck.max_ms - deadline_ms
    met = over <= OVERHEAD_ALLOWED * 1000 and found["local_answered"] == stuck.samples
    console.print(
        f"  added on a turn: p50 {stuck.p50_ms - healthy.p50_ms:.1f} ms, "
        f"p95 {stuck.p95_ms - healthy.p95_ms:.1f} ms; worst {over:+.1f} ms past the deadline; "
        f"local answered {found['local_answered']}/{stuck.samples}, hanging skipped "
        f"{found['hanging_skipped']}/{stuck.samples}; tasks left {found['tasks_left']}: "
        + ("within the deadline" if met else "NOT within the deadline")
    )
    return found | {
        "healthy": asdict(healthy),
        "hanging": asdict(stuck),
        "added_p50_ms": stuck.p50_ms - healthy.p50_ms,
        "added_p95_ms": stuck.p95_ms - healthy.p95_ms,
        "worst_past_deadline_ms": over,
        "overhead_allowed_ms": OVERHEAD_ALLOWED * 1000,
        "within_deadline": met,
        "default_deadline_s": DEFAULT_DEADLINE,
    }
