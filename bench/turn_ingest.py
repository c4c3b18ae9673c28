"""Turn ingest: route a message and durably append a user and an assistant entry.

Measured side by side in one run, on the same disk, with many live sessions
already stored:

- sessiongate's SQLite store (and PostgreSQL with `--pg-dsn`), through the
  public store API: `routed_session(key)`, `start_session(...)` when the key is
  not routed yet, then two `append_entries` calls, each its own durable
  transaction (the user entry is written before the agent runs, the reply
  before it is sent);
- the Hermes gateway's own `SessionStore` doing the same work, in its own
  virtualenv (see `bench/hermes_driver.py`);
- raw SQLite, one INSERT per turn in its own transaction (WAL,
  synchronous=FULL): the floor of one durable write on this disk.

Sequential latency (p50/p99) of single turns, and the throughput of many
concurrent chats. Usage:

    uv run python bench/turn_ingest.py --sessions 1000,10000,100000 --turns 1000 \
        --concurrency 64 [--hermes-venv PATH] [--pg-dsn DSN] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from sessiongate.clock import SystemClock, system_random
from sessiongate.ids import IdGenerator
from sessiongate.keys import KeyPolicy, session_key
from sessiongate.models import ChatType, NewEntry, Role, Session, Source
from sessiongate.store import Store, open_store

BENCH_DIR = Path(__file__).resolve().parent
HERMES_VERSION = "hermes-agent==0.19.0"
KEYS = KeyPolicy()
RAW = "raw SQLite INSERT"
TEXT_USER = "what is the weather like in Lisbon tomorrow afternoon?"
TEXT_ASSISTANT = "Tomorrow afternoon in Lisbon: sunny, 24 °C, light wind from the north-west."


@dataclass
class Result:
    """The figures of one system at one number of live sessions."""

    system: str
    sessions: int
    turns: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    concurrent_turns: int = 0
    turns_per_s: float = 0.0
    seed_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `samples` (any order)."""
    ordered = sorted(samples)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(
    system: str, sessions: int, latencies: Sequence[float], seed_seconds: float = 0.0
) -> Result:
    """A result from per-turn latencies in seconds."""
    return Result(
        system=system,
        sessions=sessions,
        turns=len(latencies),
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        mean_ms=sum(latencies) / len(latencies) * 1000,
        seed_seconds=seed_seconds,
    )


# --- raw SQLite: the floor ----------------------------------------------------


class RawSQLite:
    """One INSERT per turn in its own transaction: WAL, synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE entries (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
            "role TEXT NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL)"
        )

    def turn(self, index: int) -> None:
        self._conn.execute("BEGIN")
        self._conn.execute(
            "INSERT INTO entries (session_id, role, text, created_at) VALUES (?, ?, ?, ?)",
            (f"s{index}", "user", TEXT_USER, datetime.now(UTC).isoformat()),
        )
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


def bench_raw(raw: RawSQLite, sessions: int, turns: int, rng: random.Random) -> Result:
    """Sequential raw inserts; throughput is serial (one fsync per transaction)."""
    latencies: list[float] = []
    for _ in range(turns):
        index = rng.randrange(sessions)
        started = time.perf_counter()
        raw.turn(index)
        latencies.append(time.perf_counter() - started)
    result = summarize(RAW, sessions, latencies)
    result.concurrent_turns = turns
    result.turns_per_s = turns / sum(latencies)
    result.notes.append("throughput: serial, one fsync per transaction")
    return result


# --- the Hermes gateway's store, in its own virtualenv -------------------------


def ensure_hermes_venv(path: Path, console: Console) -> Path:
    """The python of a virtualenv holding hermes-agent; creates it if missing."""
    python = path / "bin" / "python"
    probe = [str(python), "-c", "import gateway.session, hermes_state"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    console.print(f"[yellow]creating {path} with {HERMES_VERSION} (takes a while)")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", HERMES_VERSION], check=True)
    return python


def bench_hermes(python: Path, args: argparse.Namespace, workdir: Path) -> tuple[str, list[Result]]:
    """Run `hermes_driver.py` under the Hermes venv; its version and results."""
    command = [
        str(python),
        str(BENCH_DIR / "hermes_driver.py"),
        "--sessions", ",".join(str(n) for n in args.hermes_sessions),
        "--turns", str(args.hermes_turns),
        "--concurrent-turns", str(args.hermes_concurrent_turns),
        "--concurrency", str(args.concurrency),
        "--seed", str(args.seed),
        "--dir", str(workdir),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"hermes driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
    document: dict[str, Any] = json.loads(done.stdout)
    results: list[Result] = []
    for item in document["results"]:
        result = summarize(
            "Hermes SessionStore", item["sessions"], item["latencies_s"], item["seed_seconds"]
        )
        result.concurrent_turns = int(item["concurrent"]["turns"])
        result.turns_per_s = float(item["concurrent"]["turns_per_s"])
        results.append(result)
    return str(document["hermes_agent"]), results


# --- sessiongate ---------------------------------------------------------------


class GateBench:
    """sessiongate's store doing the turns, through its public API only."""

    def __init__(self, store: Store, system: str) -> None:
        self.store = store
        self.system = system
        self.seeded = 0
        self.clock = SystemClock()
        self.ids = IdGenerator(self.clock, system_random())

    @staticmethod
    def source(index: int) -> Source:
        """Where the messages of chat number `index` come from: a Telegram DM."""
        chat = str(100_000_000 + index)
        return Source("telegram", chat, ChatType.DM, user_id=chat, user_name=f"user{index}")

    def new_session(self, source: Source, key: str, now: datetime) -> Session:
        return Session(
            id=self.ids.new(),
            key=key,
            platform=source.platform,
            chat_id=source.chat_id,
            chat_type=source.chat_type,
            user_id=source.user_id,
            user_name=source.user_name,
            created_at=now,
            last_activity_at=now,
        )

    def open_new(self, index: int) -> Session:
        source = self.source(index)
        return self.new_session(source, session_key(source, KEYS), self.clock.now())

    async def seed_to(self, count: int, concurrency: int) -> float:
        """Start sessions until `count` are live, `concurrency` at a time; seconds taken."""
        started = time.perf_counter()
        indexes = iter(range(self.seeded, count))

        async def opener() -> None:
            for index in indexes:
                await self.store.start_session(self.open_new(index))

        await asyncio.gather(*(opener() for _ in range(concurrency)))
        self.seeded = max(self.seeded, count)
        return time.perf_counter() - started

    async def turn(self, index: int) -> None:
        """Route one message, append it, then append the reply: each write durable."""
        source = self.source(index)
        key = session_key(source, KEYS)
        session = await self.store.routed_session(key)
        if session is None:
            session = await self.store.start_session(
                self.new_session(source, key, self.clock.now())
            )
        user = NewEntry(role=Role.USER, text=TEXT_USER)
        await self.store.append_entries(session.id, [user], at=self.clock.now())
        reply = NewEntry(role=Role.ASSISTANT, text=TEXT_ASSISTANT)
        await self.store.append_entries(session.id, [reply], at=self.clock.now())

    async def leased_turn(self, index: int) -> None:
        """The gateway's store work for a turn: `turn` under the conversation's lease.

        The lease is taken first (one more durable write), fences both appends, and is
        given back by the reply's append in its transaction.
        """
        source = self.source(index)
        key = session_key(source, KEYS)
        lease = await self.store.acquire_lease(key, "bench", at=self.clock.now(), lease_seconds=30)
        assert lease is not None  # one turn per chat at a time: the key is always free
        session = await self.store.routed_session(key)
        if session is None:
            session = await self.store.start_session(
                self.new_session(source, key, self.clock.now()), fence=lease
            )
        user = NewEntry(role=Role.USER, text=TEXT_USER)
        await self.store.append_entries(session.id, [user], at=self.clock.now(), fence=lease)
        reply = NewEntry(role=Role.ASSISTANT, text=TEXT_ASSISTANT)
        await self.store.append_entries(
            session.id, [reply], at=self.clock.now(), fence=lease, release=True
        )


async def sequential(
    turn: Callable[[int], Awaitable[None]], live: int, turns: int, rng: random.Random
) -> list[float]:
    """Latencies in seconds of turns one after another, on random live sessions."""
    latencies: list[float] = []
    for _ in range(turns):
        index = rng.randrange(live)
        started = time.perf_counter()
        await turn(index)
        latencies.append(time.perf_counter() - started)
    return latencies


async def concurrent(
    turn: Callable[[int], Awaitable[None]], live: int, turns: int, chats: int
) -> float:
    """Turns per second of `turns` turns spread over `chats` concurrent chats."""
    remaining = turns

    async def chat(index: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await turn(index)

    started = time.perf_counter()
    await asyncio.gather(*(chat(i * live // chats) for i in range(chats)))
    return turns / (time.perf_counter() - started)


async def bench_gate(
    gate: GateBench, raw: RawSQLite | None, args: argparse.Namespace, console: Console
) -> list[Result]:
    """Grow one store through every size; at each, the floor then sessiongate."""
    rng = random.Random(args.seed)
    results: list[Result] = []
    for count in args.gate_sizes:
        seed_seconds = await gate.seed_to(count, args.seed_concurrency)
        # Seeding leaves the kernel writing back dirty pages; done now, that writeback does
        # not slow the fsyncs of the timed turns that follow.
        await asyncio.to_thread(os.sync)
        if raw is not None:
            results.append(bench_raw(raw, count, args.turns, rng))
        latencies = await sequential(gate.turn, count, args.turns, rng)
        result = summarize(gate.system, count, latencies, seed_seconds)
        result.concurrent_turns = args.concurrent_turns
        result.turns_per_s = await concurrent(
            gate.turn, count, args.concurrent_turns, args.concurrency
        )
        results.append(result)
        leased = summarize(
            f"{gate.system} + lease",
            count,
            await sequential(gate.leased_turn, count, args.turns, rng),
            0.0,
        )
        leased.concurrent_turns = args.concurrent_turns
        leased.turns_per_s = await concurrent(
            gate.leased_turn, count, args.concurrent_turns, args.concurrency
        )
        results.append(leased)
        console.print(
            f"  {gate.system} @ {count:,}: seeded in {seed_seconds:.1f}s, "
            f"p50 {result.p50_ms:.3f} ms, {result.turns_per_s:,.0f} turns/s; "
            f"with the lease p50 {leased.p50_ms:.3f} ms, {leased.turns_per_s:,.0f} turns/s"
        )
    return results


def pg_problem(admin_dsn: str) -> str | None:
    """Why the PostgreSQL server of `admin_dsn` cannot be used, or None."""
    try:
        with psycopg.connect(admin_dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


@contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    """A DSN of a fresh PostgreSQL database on the server of `admin_dsn`, dropped after."""
    name = f"sg_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run_gate(
    url: str, system: str, raw: RawSQLite | None, args: argparse.Namespace, console: Console
) -> list[Result]:
    store = await open_store(url)
    try:
        return await bench_gate(GateBench(store, system), raw, args, console)
    finally:
        await store.close()


# --- the machine, the report ---------------------------------------------------


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
        # The machine may be shared: what else ran shows in the load average.
        "load_average_start": load_average(),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_ticks() -> tuple[int, int]:
    """All CPU time and the part stolen by the hypervisor (of a VM), in ticks since boot."""
    with open("/proc/stat", encoding="utf-8") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is counted in user)
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def find(results: Sequence[Result], system: str, sessions: int) -> Result | None:
    return next((r for r in results if r.system == system and r.sessions == sessions), None)


def ratios(results: Sequence[Result]) -> dict[str, float]:
    """The side-by-side ratios the targets are stated in."""
    out: dict[str, float] = {}
    gate = "sessiongate SQLite"
    for hermes in (r for r in results if r.system == "Hermes SessionStore"):
        mine = find(results, gate, hermes.sessions)
        if mine is not None:
            n = f"{hermes.sessions // 1000}k"
            out[f"Hermes p50 / sessiongate p50 @ {n}"] = hermes.p50_ms / mine.p50_ms
            out[f"sessiongate / Hermes turns/s @ {n}"] = mine.turns_per_s / hermes.turns_per_s
    for mine in (r for r in results if r.system == gate):
        raw = find(results, RAW, mine.sessions)
        if raw is not None:
            n = f"{mine.sessions // 1000}k"
            out[f"sessiongate p50 / raw INSERT p50 @ {n}"] = mine.p50_ms / raw.p50_ms
            out[f"sessiongate / raw serial turns/s @ {n}"] = mine.turns_per_s / raw.turns_per_s
    for mine in (r for r in results if r.system == gate):
        leased = find(results, f"{gate} + lease", mine.sessions)
        if leased is not None:
            n = f"{mine.sessions // 1000}k"
            out[f"with lease p50 / without @ {n}"] = leased.p50_ms / mine.p50_ms
            out[f"with lease turns/s / without @ {n}"] = leased.turns_per_s / mine.turns_per_s
    sizes = sorted(r.sessions for r in results if r.system == gate)
    if len(sizes) > 1:
        first, last = find(results, gate, sizes[0]), find(results, gate, sizes[-1])
        assert first is not None
        assert last is not None
        out[f"sessiongate p50 @ {sizes[-1]:,} / @ {sizes[0]:,}"] = last.p50_ms / first.p50_ms
    return out


def render(console: Console, results: Sequence[Result], ratio: dict[str, float]) -> None:
    table = Table(title="turn ingest: route + append user + append assistant, durable")
    for name in (
        "system",
        "live sessions",
        "seq turns",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "concurrent turns",
        "turns/s",
        "seeding s",
    ):
        table.add_column(name, justify="left" if name == "system" else "right", no_wrap=True)
    for r in sorted(results, key=lambda r: (r.sessions, r.system)):
        table.add_row(
            r.system,
            f"{r.sessions:,}",
            f"{r.turns:,}",
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.mean_ms:.3f}",
            f"{r.concurrent_turns:,}",
            f"{r.turns_per_s:,.0f}",
            f"{r.seed_seconds:.1f}",
        )
    console.print(table)
    side = Table(title="ratios, measured side by side in this run")
    side.add_column("ratio")
    side.add_column("value", justify="right")
    for name, value in ratio.items():
        side.add_row(name, f"{value:,.1f}x" if value >= 10 else f"{value:.2f}x")
    console.print(side)


# --- the command ---------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    def counts(text: str) -> list[int]:
        return [int(part) for part in text.split(",") if part]

    parser = argparse.ArgumentParser(description="Turn ingest benchmark (see module docstring).")
    parser.add_argument(
        "--sessions",
        type=counts,
        default=[1000, 10000, 100000],
        help="live sessions to measure at, comma-separated",
    )
    parser.add_argument("--turns", type=int, default=1000, help="sequential turns per size")
    parser.add_argument(
        "--concurrent-turns",
        type=int,
        default=None,
        help="turns per size for the throughput run (default 4 x --turns)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent chats")
    parser.add_argument(
        "--seed-concurrency",
        type=int,
        default=256,
        help="concurrent start_session calls while seeding",
    )
    parser.add_argument(
        "--hermes-venv",
        type=Path,
        default=Path("/tmp/bench-venvs/hermes"),
        help=f"virtualenv with {HERMES_VERSION} (created if missing)",
    )
    parser.add_argument("--no-hermes", action="store_true", help="skip the Hermes store")
    parser.add_argument("--hermes-sessions", type=counts, default=[1000, 3000])
    parser.add_argument("--hermes-turns", type=int, default=100)
    parser.add_argument("--hermes-concurrent-turns", type=int, default=128)
    parser.add_argument(
        "--pg-dsn", default=None, help="PostgreSQL server (admin DSN); a scratch database is used"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the scratch files go")
    parser.add_argument("--seed", type=int, default=7, help="random seed for session picks")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.concurrent_turns is None:
        args.concurrent_turns = 4 * args.turns
    sizes = set(args.sessions)
    if not args.no_hermes:
        sizes |= set(args.hermes_sessions)
    args.gate_sizes = sorted(sizes)
    return args


async def bench_stores(
    args: argparse.Namespace, workdir: Path, console: Console
) -> tuple[list[Result], list[str]]:
    """sessiongate on SQLite (with the raw floor) and, if reachable, on PostgreSQL."""
    notes: list[str] = []
    raw = RawSQLite(workdir / "raw.db")
    try:
        results = await run_gate(
            f"sqlite:///{workdir / 'sessiongate.db'}", "sessiongate SQLite", raw, args, console
        )
    finally:
        raw.close()
    if args.pg_dsn:
        problem = pg_problem(args.pg_dsn)
        if problem is not None:
            notes.append(f"PostgreSQL at {args.pg_dsn} unreachable, column skipped: {problem}")
        else:
            with scratch_database(args.pg_dsn) as dsn:
                results += await run_gate(dsn, "sessiongate Postgres", None, args, console)
    return results, notes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Wide enough for the table when the output is a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 132)
    started = time.perf_counter()
    ticks = cpu_ticks()
    with tempfile.TemporaryDirectory(prefix="turn-ingest-", dir=args.dir) as scratch:
        workdir = Path(scratch)
        results: list[Result] = []
        document: dict[str, Any] = {
            "command": " ".join(["uv run python bench/turn_ingest.py", *sys.argv[1:]]),
            "machine": machine(workdir),
        }
        if not args.no_hermes:
            console.print("Hermes SessionStore …")
            python = ensure_hermes_venv(args.hermes_venv, console)
            document["hermes_agent"], hermes = bench_hermes(python, args, workdir)
            results += hermes
        console.print("sessiongate and raw SQLite …")
        gate, notes = asyncio.run(bench_stores(args, workdir, console))
        results += gate
    ratio = ratios(results)
    render(console, results, ratio)
    for note in notes:
        console.print(f"[yellow]{note}")
    elapsed = time.perf_counter() - started
    document["load_average_end"] = load_average()
    total, stolen = (end - start for end, start in zip(cpu_ticks(), ticks, strict=True))
    document["cpu_steal_percent"] = round(100 * stolen / max(1, total), 1)
    console.print(
        f"whole run: {elapsed:.0f} s; load average {document['machine']['load_average_start']} "
        f"at the start, {document['load_average_end']} at the end; "
        f"{document['cpu_steal_percent']}% of the CPU time stolen by the hypervisor"
    )
    if args.json is not None:
        document.update(
            results=[asdict(r) for r in results], ratios=ratio, notes=notes, run_seconds=elapsed
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
