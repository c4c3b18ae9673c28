"""What the memory benchmarks share: percentiles, the machine, scratch stores, ledgers."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from rich.table import Table

from memory_corpus import Corpus, Turn
from sessiongate.clock import SystemClock, system_random
from sessiongate.ids import IdGenerator
from sessiongate.models import ChatType, NewEntry, Role, Session
from sessiongate.store import Store

PLATFORM = "telegram"


@dataclass(frozen=True, slots=True)
class Stats:
    """Latency figures of one series, in milliseconds."""

    samples: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float

    def cells(self) -> list[str]:
        return [
            f"{self.samples:,}",
            f"{self.p50_ms:.2f}",
            f"{self.p95_ms:.2f}",
            f"{self.max_ms:.2f}",
            f"{self.mean_ms:.2f}",
        ]


STATS_COLUMNS = ("samples", "p50 ms", "p95 ms", "max ms", "mean ms")


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `samples` (any order)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def stats(seconds: Sequence[float]) -> Stats:
    """The figures of latencies given in seconds."""
    return Stats(
        samples=len(seconds),
        p50_ms=percentile(seconds, 0.50) * 1000,
        p95_ms=percentile(seconds, 0.95) * 1000,
        max_ms=max(seconds) * 1000,
        mean_ms=sum(seconds) / len(seconds) * 1000,
    )


def table(title: str, columns: Sequence[str], *, left: int = 1) -> Table:
    """A Rich table whose first `left` columns are text and the rest figures."""
    made = Table(title=title)
    for index, name in enumerate(columns):
        made.add_column(name, justify="left" if index < left else "right", no_wrap=True)
    return made


def uptime() -> str:
    """`uptime` as the machine prints it: what else was running shows in the load."""
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or ", ".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "uptime_start": uptime(),
    }


@asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """The DSN of a fresh PostgreSQL database on the server of `admin_dsn`, dropped after."""
    name = f"sg_memory_bench_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_dsn.rpartition('/')[0]}/{name}"
    finally:
        # FORCE: an interrupted run leaves no connection that would keep it alive.
        async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class SessionMaker:
    """New DM sessions of the corpus' users, with real session ids (not stored)."""

    def __init__(self) -> None:
        self.clock = SystemClock()
        self.ids = IdGenerator(self.clock, system_random())

    def session(self, user: str, at: datetime) -> Session:
        session_id = self.ids.new()
        chat = f"chat-{user}-{session_id[-8:]}"
        return Session(
            id=session_id,
            key=f"agent:main:{PLATFORM}:dm:{chat}",
            platform=PLATFORM,
            chat_id=chat,
            chat_type=ChatType.DM,
            created_at=at,
            last_activity_at=at,
            user_id=user,
            user_name=user,
        )


class Ledger:
    """Sessions with their ledgers in a store, written through the public store API."""

    def __init__(self, store: Store, corpus: Corpus) -> None:
        self.store = store
        self.corpus = corpus
        self.maker = SessionMaker()

    async def recorded(self, user: str, turns: Sequence[Turn]) -> Session:
        """A stored session of `user` whose ledger holds `turns`."""
        now = self.maker.clock.now()
        session = await self.store.start_session(self.maker.session(user, now))
        entries = [NewEntry(role=Role(t.role), text=t.text) for t in turns]
        await self.store.append_entries(session.id, entries, at=now)
        stored = await self.store.get_session(session.id)
        assert stored is not None
        return stored

    async def sessions(self, count: int, turns: int) -> list[Session]:
        """`count` stored sessions of `turns` turns each, users taken in turn."""
        users = self.corpus.users
        made: list[Session] = []
        for index in range(count):
            user = users[index % len(users)]
            made.append(await self.recorded(user, self.corpus.conversation(user, turns)))
        return made
