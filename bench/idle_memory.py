"""Resident memory of an idle gateway over 0, 1k, 10k and 100k stored sessions.

    uv run python bench/idle_memory.py [--quick] [--sizes 0,1000,10000,100000]
        [--repeats 2] [--settle 10] [--samples 5] [--json out.json]

Each size gets its own SQLite store, seeded before any gateway starts:
`lifecycle_seed.seed_bulk_sqlite` writes the sessions as a long use leaves them
(`--per-chat` sessions per Telegram DM chat: the older ones `finalized` after idle
expiry, the newest one `active` and routed with its 24 h idle timer; `--due` of the
active ones fell due 1-2 h ago), then every session gets a ledger of `--entries`
entries (user and assistant alternately, about 100 characters each) and every
finalized one the cursor of the `local` provider at its last seq, committed at its
end (epoch 1). Then `sessiongate run` (SQLite, idle reset after 24 h, the defaults
otherwise: the `local` provider, the offline agent, 8 workers, poll 1 s) is started
on each store in turn, and for each:

- **ready**: seconds from the spawn to the HTTP API answering;
- **settled**: seconds from the spawn until, read from outside (read-only), no job
  is pending or running, no session is `ending` and no timer is due (the sweeper
  has ended the due sessions at start-up and their commits have run);
- then after `--settle` more seconds of idleness, `--samples` readings one second
  apart of `/proc/PID/status`: VmRSS (median), RssAnon, VmHWM (the peak, since the
  start), and the number of threads;
- then `--scrapes` scrapes of `GET /metrics` one after another (each reads its
  aggregates from the store: a scan of the sessions table), timed, and one more
  reading.

The sizes are measured in one run, one gateway at a time, in the order of
`--sizes` and reversed on every other repetition. The gateway is stopped with
SIGTERM after its readings. Nothing talks to it otherwise: this is the memory of
the process at rest, with everything it keeps per stored session, if anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

import lifecycle_seed
from gateway_support import (
    GatewayConfig,
    machine_info,
    memory_status,
    spawn,
    stop,
    threads,
    wait_http,
    write_config,
)
from lifecycle_seed import Mix
from lifecycle_support import load_average
from sessiongate.clock import SystemClock, system_random
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.policy import ResetMode, ResetPolicy, ResetRules
from sessiongate.store import open_store
from store_outside import OutsideStore

PROVIDER = "local"
SETTINGS = LifecycleSettings(
    reset=ResetRules(default=ResetPolicy(mode=ResetMode.IDLE, idle=lifecycle_seed.IDLE)),
    providers=(PROVIDER,),
)
_MIB = 1024.0


def _counts(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


@dataclass(frozen=True, slots=True)
class Seeded:
    """One size's store: what it holds and how long seeding took."""

    sessions: int
    active: int
    entries: int
    file_mib: float
    seconds: float
    config: GatewayConfig
    url: str


@dataclass
class Reading:
    """One gateway on one store: its start, its settling, and its memory at rest."""

    sessions: int
    repetition: int
    ready_seconds: float = 0.0
    settled_seconds: float = 0.0
    rss_kib: list[int] = field(default_factory=list)
    anon_kib: int = 0
    hwm_kib: int = 0
    threads: int = 0
    after_metrics_rss_kib: int = 0
    after_metrics_hwm_kib: int = 0
    scrape_seconds: list[float] = field(default_factory=list)

    @property
    def rss_median_kib(self) -> float:
        return float(statistics.median(self.rss_kib)) if self.rss_kib else 0.0


_LEDGER = """
INSERT INTO ledger (session_id, seq, role, text, token_estimate, created_at)
SELECT s.id, n.seq, CASE n.seq % 2 WHEN 1 THEN 'user' ELSE 'assistant' END,
       printf('%s message %d of chat %s: the weather, the garden, and the trip next '
              || 'week to see the family.',
              CASE n.seq % 2 WHEN 1 THEN 'user' ELSE 'assistant' END, n.seq, s.chat_id),
       25, s.created_at + n.seq * 1000000
FROM sessions AS s CROSS JOIN seqs AS n"""
_COUNTERS = """
UPDATE sessions SET turn_count = :entries, token_estimate = 25 * :entries,
    epoch = CASE state WHEN 'finalized' THEN 1 ELSE 0 END"""
_CURSORS = """
INSERT INTO cursors (provider, session_id, delivered_seq, committed_seq, commit_epoch,
                     last_commit_at, updated_at)
SELECT :provider, id, turn_count, turn_count, 1, ended_at, ended_at
FROM sessions WHERE state = 'finalized'"""


def add_ledgers(path: Path, entries: int) -> int:
    """Give every stored session `entries` ledger entries, and finalized ones a cursor."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = -1048576")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TEMP TABLE seqs (seq INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO seqs VALUES (?)", [(n,) for n in range(1, entries + 1)])
        written = conn.execute(_LEDGER).rowcount
        conn.execute(_COUNTERS, {"entries": entries})
        conn.execute(_CURSORS, {"provider": PROVIDER})
        conn.execute("COMMIT")
    finally:
        conn.close()
    return int(written)


async def seed(directory: Path, sessions: int, *, per_chat: int, due: int, entries: int) -> Seeded:
    """A fresh, migrated store in `directory` holding `sessions` sessions with ledgers."""
    started = time.perf_counter()
    path = directory / "sg.db"
    url = f"sqlite://{path}"
    store = await open_store(url)
    await store.close()
    active = written = 0
    if sessions:
        clock = SystemClock()
        engine = Engine(store, SETTINGS, clock=clock, ids=IdGenerator(clock, system_random()))
        mix = Mix(sessions, min(due, sessions // per_chat), per_chat, datetime.now(UTC))
        await asyncio.to_thread(lifecycle_seed.seed_bulk_sqlite, path, engine, mix)
        written = await asyncio.to_thread(add_ledgers, path, entries)
        active = mix.chats
    config = write_config(directory, url, idle_after="24h")
    size = path.stat().st_size / _MIB / _MIB
    return Seeded(sessions, active, written, size, time.perf_counter() - started, config, url)


async def settled(outside: OutsideStore, within: float) -> None:
    """Wait until no job is open, no session is ending and no timer is due."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        work = await asyncio.to_thread(outside.work)
        due = await asyncio.to_thread(outside.due_timers, time.time())
        if not work.jobs and not work.ending and due == 0:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the gateway did not settle within {within:.0f} s")


async def scrape(config: GatewayConfig, times: int) -> list[float]:
    """`GET /metrics` `times` times, one after another; how long each took."""
    took = []
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(times):
            started = time.perf_counter()
            response = await client.get(f"{config.base_url}/metrics")
            response.raise_for_status()
            took.append(time.perf_counter() - started)
    return took


async def measure(seeded: Seeded, repetition: int, args: argparse.Namespace) -> Reading:
    """Start a gateway on `seeded`, let it settle and rest, and read its memory."""
    reading = Reading(seeded.sessions, repetition)
    outside = OutsideStore(seeded.url)
    proc = spawn(seeded.config)
    spawned = time.perf_counter()
    try:
        reading.ready_seconds = await wait_http(seeded.config, proc) - spawned
        await settled(outside, within=600)
        reading.settled_seconds = time.perf_counter() - spawned
        await asyncio.sleep(args.settle)
        for _ in range(args.samples):
            reading.rss_kib.append(memory_status(proc.pid)["VmRSS"])
            await asyncio.sleep(1.0)
        status = memory_status(proc.pid)
        reading.anon_kib, reading.hwm_kib = status["RssAnon"], status["VmHWM"]
        reading.threads = threads(proc.pid)
        reading.scrape_seconds = await scrape(seeded.config, args.scrapes)
        status = memory_status(proc.pid)
        reading.after_metrics_rss_kib, reading.after_metrics_hwm_kib = (
            status["VmRSS"],
            status["VmHWM"],
        )
    finally:
        stop(proc)
        outside.close()
    return reading


def _mib(kib: float) -> str:
    return f"{kib / _MIB:.1f}"


def summary_rows(stores: list[Seeded], readings: list[Reading]) -> list[list[str]]:
    """One row per size: what the store holds, and the memory over the repetitions."""
    rows = []
    for seeded in stores:
        mine = [r for r in readings if r.sessions == seeded.sessions]
        rss = [r.rss_median_kib for r in mine]
        rows.append(
            [
                f"{seeded.sessions:,}",
                f"{seeded.active:,}",
                f"{seeded.entries:,}",
                f"{seeded.file_mib:.1f}",
                f"{statistics.median(r.ready_seconds for r in mine):.2f}",
                f"{statistics.median(r.settled_seconds for r in mine):.2f}",
                " / ".join(_mib(value) for value in rss),
                " / ".join(_mib(r.anon_kib) for r in mine),
                " / ".join(_mib(r.hwm_kib) for r in mine),
                " / ".join(_mib(r.after_metrics_rss_kib) for r in mine),
                f"{statistics.median(t for r in mine for t in r.scrape_seconds) * 1000:.1f}",
                " / ".join(str(r.threads) for r in mine),
            ]
        )
    return rows


COLUMNS = [
    "stored sessions",
    "active",
    "ledger entries",
    "db MiB",
    "ready s",
    "settled s",
    "VmRSS MiB",
    "RssAnon MiB",
    "VmHWM MiB",
    "VmRSS after /metrics",
    "scrape ms",
    "threads",
]


def render(console: Console, stores: list[Seeded], readings: list[Reading]) -> None:
    title = "Idle gateway memory (medians of the start-up times; memory per repetition, a / b)"
    table = Table(title=title)
    for name in COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    for row in summary_rows(stores, readings):
        table.add_row(*row)
    console.print(table)
    base = [r.rss_median_kib for r in readings if r.sessions == stores[0].sessions]
    top = [r.rss_median_kib for r in readings if r.sessions == stores[-1].sessions]
    if base and top:
        ratio = statistics.median(top) / statistics.median(base)
        console.print(
            f"VmRSS at {stores[-1].sessions:,} sessions / at {stores[0].sessions:,}: {ratio:.3f}x "
            f"({(statistics.median(top) - statistics.median(base)) / _MIB:+.1f} MiB)"
        )


async def bench(
    args: argparse.Namespace, workdir: Path, console: Console
) -> tuple[list[Seeded], list[Reading]]:
    stores: list[Seeded] = []
    for sessions in args.sizes:
        seeded = await seed(
            workdir / f"s{sessions}",
            sessions,
            per_chat=args.per_chat,
            due=args.due,
            entries=args.entries,
        )
        console.print(
            f"seeded {sessions:,} sessions ({seeded.entries:,} entries, "
            f"{seeded.file_mib:.1f} MiB) in {seeded.seconds:.1f} s"
        )
        stores.append(seeded)
    readings: list[Reading] = []
    for rep in range(args.repeats):
        for seeded in stores if rep % 2 == 0 else stores[::-1]:
            reading = await measure(seeded, rep, args)
            console.print(
                f"repetition {rep + 1}: {seeded.sessions:,} sessions: ready "
                f"{reading.ready_seconds:.2f} s, VmRSS {_mib(reading.rss_median_kib)} MiB, "
                f"VmHWM {_mib(reading.hwm_kib)} MiB"
            )
            readings.append(reading)
    return stores, readings


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Idle gateway memory (see module docstring).")
    parser.add_argument("--quick", action="store_true", help="0, 1k, 10k; 1 repetition; short")
    parser.add_argument("--sizes", type=_counts, default=None, help="default 0,1k,10k,100k")
    parser.add_argument("--repeats", type=int, default=None, help="default 2 (quick: 1)")
    parser.add_argument("--per-chat", type=int, default=10, help="sessions per chat (1 active)")
    parser.add_argument("--due", type=int, default=10, help="active sessions due at start-up")
    parser.add_argument("--entries", type=int, default=4, help="ledger entries per session")
    parser.add_argument("--settle", type=float, default=None, help="idle s before reading")
    parser.add_argument("--samples", type=int, default=5, help="readings, one a second")
    parser.add_argument("--scrapes", type=int, default=10, help="GET /metrics, then a reading")
    parser.add_argument("--dir", type=Path, default=None, help="where scratch files go")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([0, 1000, 10_000] if args.quick else [0, 1000, 10_000, 100_000])
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.settle = args.settle if args.settle is not None else (2.0 if args.quick else 10.0)
    if args.quick:
        args.samples = min(args.samples, 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="idle-memory-", dir=args.dir) as scratch:
        workdir = Path(scratch).resolve()
        document: dict[str, Any] = {
            "command": " ".join(["uv run python bench/idle_memory.py", *sys.argv[1:]]),
            "machine": machine_info(workdir),
        }
        stores, readings = asyncio.run(bench(args, workdir, console))
    render(console, stores, readings)
    elapsed = time.perf_counter() - started
    console.print(f"whole run: {elapsed:.0f} s; load average at the end: {load_average()}")
    if args.json is not None:
        document.update(
            stores=[{k: v for k, v in asdict(s).items() if k != "config"} for s in stores],
            readings=[{**asdict(r), "rss_median_kib": r.rss_median_kib} for r in readings],
            run_seconds=elapsed,
            load_average_at_end=load_average(),
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
