"""What the lifecycle benchmarks share: scratch stores, the machine, tables, percentiles.

Every store a benchmark measures is fresh: a new SQLite file in the run's scratch
directory, or a new PostgreSQL database created on the server of `--pg-dsn` and
dropped afterwards (`WITH (FORCE)`, so an interrupted run leaves nothing behind
that holds connections).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from sessiongate.models import OutboxStats
from sessiongate.store import Store, open_store

SQLITE = "SQLite"
POSTGRES = "PostgreSQL"


@dataclass
class Report:
    """One benchmark's table: a title, columns, rows of text, notes and the raw figures."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Target:
    """A fresh store under test: its backend label, URL and, for SQLite, its file."""

    backend: str
    url: str
    store: Store
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class Backends:
    """Where the benchmarks may open stores."""

    workdir: Path
    pg_admin_dsn: str | None

    @property
    def names(self) -> list[str]:
        return [SQLITE] if self.pg_admin_dsn is None else [SQLITE, POSTGRES]

    @asynccontextmanager
    async def fresh(self, backend: str, name: str) -> AsyncIterator[Target]:
        """A new, migrated store on `backend`, closed (and its database dropped) after."""
        if backend == SQLITE:
            path = self.workdir / f"{name}-{uuid.uuid4().hex[:8]}.db"
            url = f"sqlite:///{path}"
            store = await open_store(url)
            try:
                yield Target(backend, url, store, path)
            finally:
                await store.close()
            return
        assert self.pg_admin_dsn is not None
        async with scratch_database(self.pg_admin_dsn) as dsn:
            store = await open_store(dsn)
            try:
                yield Target(backend, dsn, store)
            finally:
                await store.close()


def pg_problem(admin_dsn: str) -> str | None:
    """Why the PostgreSQL server of `admin_dsn` cannot be used, or None."""
    try:
        with psycopg.connect(admin_dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


@asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """The DSN of a fresh database on the server of `admin_dsn`, dropped afterwards."""
    name = f"sg_lifecycle_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `samples` (any order)."""
    ordered = sorted(samples)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine(workdir: Path) -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    device, fstype, best = "unknown", "unknown", ""
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            dev, point, kind = line.split()[:3]
            if str(workdir).startswith(point) and len(point) > len(best):
                device, fstype, best = dev, kind, point
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": model,
        "disk": f"{device} ({fstype}) mounted on {best}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "load_average_at_start": load_average(),
        **source_tree(),
    }


def source_tree() -> dict[str, Any]:
    """The commit measured, and which source files differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_src": changed}


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.02
) -> bool:
    """Poll `condition` until it holds (True) or `within` seconds pass (False)."""
    deadline = time.perf_counter() + within
    while True:
        if await condition():
            return True
        if time.perf_counter() >= deadline:
            return False
        await asyncio.sleep(interval)


async def outbox_idle(store: Store) -> bool:
    """Whether no job is pending or running."""
    stats: OutboxStats = await store.outbox_stats()
    return stats.pending == 0 and stats.running == 0


def ms(seconds: float) -> str:
    """Seconds shown as milliseconds with sensible precision."""
    value = seconds * 1000
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
