"""Recovery after SIGKILL: a real `sessiongate run` killed with work pending, then restarted.

    uv run python bench/recovery.py [--quick] [--repeats 5] [--chats 200] [--turns 3]
        [--kill-after 0.5] [--short-lease 2] [--no-pg] [--json out.json]

Four cases, each on its own store: SQLite and PostgreSQL (a scratch database on the
server of `--pg-dsn`, dropped afterwards), each with the default job lease
(`workers.lease_seconds` left out of the config: 30 s) and with a short one
(`--short-lease`). Everything else is the gateway's defaults (8 jobs at a time,
poll 1 s, the `local` memory provider, the offline agent) plus idle reset after
24 h. The repetitions alternate between the cases (case 1, 2, 3, 4, then again),
so the machine's noise falls on all of them alike; each case keeps its store from
one repetition to the next (new conversations each time).

One repetition: start the gateway; `--chats` conversations send `--turns` messages
each over `POST /api/v1/messages`, then all of them send `/new` at once (an answer
comes after its `end_session` transaction committed); once `--kill-after` of those
answers are in, SIGKILL, with the other `/new` requests still in flight and the
worker busy with the ends. The store is then read from outside (see
`store_outside`): the jobs pending, the jobs running (leased by the dead process),
and the sessions `ending`. Then the gateway is spawned again, and the clocks start
at the spawn:

- **HTTP up**: `GET /v1/models` every 10 ms until it answers;
- **first accepted**: a probe conversation posts a message every 10 ms until one is
  answered with 200;
- **work done**: the store is polled every 50 ms until every job that was pending
  at the kill, and every job that was running under the dead process's lease, is
  `done` (or `dead`: counted and shown), and every session that was `ending` is
  `finalized`; the moment each of the three sets emptied is noted, and the moment
  90% of the ending sessions were finalized.

A job leased by the dead process cannot be taken before its lease expires, and the
jobs ordered after it (the same session's) wait for it: the lease left at the kill
is printed next to the figures. Then the gateway is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from gateway_support import GatewayConfig, machine_info, spawn, stop, wait_http, write_config
from lifecycle_support import POSTGRES, SQLITE, load_average, pg_problem, scratch_database
from store_outside import OutsideStore, Work

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_LEASE = 30.0
POLL = 0.05
_PARTS = ("pending", "running", "ending")


@dataclass(frozen=True, slots=True)
class Case:
    """One store and one lease setting; `lease=None` is the default lease."""

    backend: str
    lease: float | None
    config: GatewayConfig
    url: str

    @property
    def label(self) -> str:
        lease = f"{DEFAULT_LEASE:g} s (default)" if self.lease is None else f"{self.lease:g} s"
        return f"{self.backend}, lease {lease}"


@dataclass
class Recovery:
    """The figures of one repetition (seconds; clocks start at the restart's spawn)."""

    case: str
    load_seconds: float = 0.0
    pending_at_kill: int = 0
    running_at_kill: int = 0
    ending_at_kill: int = 0
    lease_left_at_kill: float = 0.0
    kill_to_spawn: float = 0.0
    http_up: float = 0.0
    first_accepted: float = 0.0
    # None: there was no such job (or session) at the kill.
    pending_done: float | None = None
    running_done: float | None = None
    ending_finalized: float | None = None
    finalized_90: float | None = None
    dead_jobs: int = 0

    @property
    def work_done(self) -> float | None:
        parts = (self.pending_done, self.running_done, self.ending_finalized)
        marks = [mark for mark in parts if mark is not None]
        return max(marks) if marks else None


@dataclass
class Gateway:
    """The process under test and the clients that talk to it."""

    case: Case
    proc: subprocess.Popen[bytes]
    client: httpx.AsyncClient
    outside: OutsideStore
    probes: int = field(default=0)

    async def post(self, chat: str, text: str) -> httpx.Response:
        body = {"chat_id": chat, "user_id": chat, "text": text}
        return await self.client.post(f"{self.case.config.base_url}/api/v1/messages", json=body)


@dataclass(frozen=True, slots=True)
class Load:
    """How many conversations, how many messages each, and when the kill comes."""

    chats: int
    turns: int
    # The SIGKILL comes once this share of the `/new` answers is in.
    kill_after: float


async def load_then_kill(gw: Gateway, rep: int, load: Load) -> tuple[float, float]:
    """Talk, end every conversation with `/new` at once, SIGKILL; (load s, kill time)."""
    started = time.perf_counter()
    names = [f"r{rep}-chat-{n}" for n in range(load.chats)]

    async def talk(chat: str) -> None:
        for turn in range(load.turns):
            response = await gw.post(chat, f"{chat} says hello, message {turn}")
            response.raise_for_status()

    await asyncio.gather(*(talk(chat) for chat in names))
    ends = [asyncio.create_task(gw.post(chat, "/new")) for chat in names]
    for answered, answer in enumerate(asyncio.as_completed(ends), start=1):
        (await answer).raise_for_status()
        if answered >= load.kill_after * len(ends):
            break
    killed = time.perf_counter()
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait()
    # The `/new` requests still in flight die with the process.
    await asyncio.gather(*ends, return_exceptions=True)
    return killed - started, killed


async def first_accepted(gw: Gateway, spawned: float) -> float:
    """Post a probe message every 10 ms until one is accepted; seconds since `spawned`."""
    while True:
        gw.probes += 1
        try:
            response = await gw.post("probe", f"probe message {gw.probes}")
        except httpx.TransportError:
            await asyncio.sleep(0.01)
            continue
        if response.status_code == 200:
            return time.perf_counter() - spawned
        await asyncio.sleep(0.01)


async def work_done(gw: Gateway, at_kill: Work, spawned: float, result: Recovery) -> None:
    """Poll the store until the work left at the kill is done; note when each part was."""
    left = dict(zip(_PARTS, (at_kill.pending, at_kill.running, at_kill.ending), strict=True))
    marks: dict[str, float | None] = {name: None for name, ids in left.items() if not ids}
    most = len(at_kill.ending) // 10  # 90% finalized: at most this many still ending
    while len(marks) < len(_PARTS):
        now_work = await asyncio.to_thread(gw.outside.work)
        elapsed = time.perf_counter() - spawned
        left["pending"] &= now_work.jobs.keys()
        left["running"] &= now_work.jobs.keys()
        left["ending"] &= now_work.ending
        if at_kill.ending and result.finalized_90 is None and len(left["ending"]) <= most:
            result.finalized_90 = elapsed
        for name, ids in left.items():
            if not ids and name not in marks:
                marks[name] = elapsed
        if len(marks) < len(_PARTS):
            await asyncio.sleep(POLL)
    result.pending_done, result.running_done = marks["pending"], marks["running"]
    result.ending_finalized = marks["ending"]


async def repetition(case: Case, rep: int, load: Load) -> Recovery:
    """One kill and restart of the gateway of `case`; its figures."""
    result = Recovery(case.label)
    outside = OutsideStore(case.url)
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them
    # under a request about to reuse one (a ReadError, not the gateway's doing).
    limits = httpx.Limits(
        max_connections=load.chats + 8,
        max_keepalive_connections=load.chats + 8,
        keepalive_expiry=2.0,
    )
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        gw = Gateway(case, spawn(case.config), client, outside)
        try:
            await wait_http(case.config, gw.proc)
            result.load_seconds, killed = await load_then_kill(gw, rep, load)
            wall_killed = time.time()
            at_kill = await asyncio.to_thread(outside.work)
            await client.aclose()  # no connection survives the dead process
            gw.client = httpx.AsyncClient(timeout=60, limits=limits)
            gw.proc = spawn(case.config)
            spawned = time.perf_counter()
            result.kill_to_spawn = spawned - killed
            note_kill(result, at_kill, wall_killed)
            await measure_restart(gw, at_kill, spawned, result)
            result.dead_jobs = await asyncio.to_thread(outside.dead_jobs)
        finally:
            await gw.client.aclose()
            stop(gw.proc)
            outside.close()
    return result


def note_kill(result: Recovery, at_kill: Work, wall_killed: float) -> None:
    result.pending_at_kill = len(at_kill.pending)
    result.running_at_kill = len(at_kill.running)
    result.ending_at_kill = len(at_kill.ending)
    leases = [j.lease_expires for j in at_kill.jobs.values() if j.lease_expires is not None]
    result.lease_left_at_kill = max((lease - wall_killed for lease in leases), default=0.0)


async def measure_restart(gw: Gateway, at_kill: Work, spawned: float, result: Recovery) -> None:
    """The three clocks of the restart, run together."""

    async def http_up() -> None:
        result.http_up = await wait_http(gw.case.config, gw.proc) - spawned

    async def accepted() -> None:
        result.first_accepted = await first_accepted(gw, spawned)

    within = (gw.case.lease or DEFAULT_LEASE) + 180
    async with asyncio.timeout(within):
        await asyncio.gather(http_up(), accepted(), work_done(gw, at_kill, spawned, result))


async def cases(
    stack: AsyncExitStack, workdir: Path, pg_dsn: str | None, short: float
) -> list[Case]:
    """The four cases (two without PostgreSQL), each with its own fresh store."""
    chosen: list[Case] = []
    for backend in (SQLITE, POSTGRES):
        if backend == POSTGRES and pg_dsn is None:
            continue
        for lease in (None, short):
            name = f"{backend.lower()}-lease-{'default' if lease is None else f'{lease:g}'}"
            if backend == SQLITE:
                url = f"sqlite://{workdir / name / 'sg.db'}"
            else:
                assert pg_dsn is not None
                url = await stack.enter_async_context(scratch_database(pg_dsn))
            config = write_config(workdir / name, url, lease_seconds=lease)
            chosen.append(Case(backend, lease, config, url))
    return chosen


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _median_max(values: list[float | None]) -> str:
    present = [value for value in values if value is not None]
    if not present:
        return "-"
    return f"{statistics.median(present):.2f} / {max(present):.2f}"


def summary_rows(results: list[Recovery]) -> list[list[str]]:
    """Per case: median and max of each clock, over the repetitions."""
    rows = []
    for label in dict.fromkeys(r.case for r in results):
        mine = [r for r in results if r.case == label]
        leased = [r.lease_left_at_kill if r.running_at_kill else None for r in mine]
        rows.append(
            [
                label,
                str(len(mine)),
                f"{statistics.median(r.pending_at_kill for r in mine):.0f}",
                f"{statistics.median(r.running_at_kill for r in mine):.0f}",
                f"{statistics.median(r.ending_at_kill for r in mine):.0f}",
                _median_max(leased),
                _median_max([r.http_up for r in mine]),
                _median_max([r.first_accepted for r in mine]),
                _median_max([r.pending_done for r in mine]),
                _median_max([r.running_done for r in mine]),
                _median_max([r.finalized_90 for r in mine]),
                _median_max([r.ending_finalized for r in mine]),
                _median_max([r.work_done for r in mine]),
            ]
        )
    return rows


SUMMARY_COLUMNS = [
    "case",
    "reps",
    "pending",
    "leased",
    "ending",
    "lease left",
    "HTTP up",
    "1st accepted",
    "pending done",
    "leased done",
    "90% finalized",
    "finalized",
    "all done",
]
DETAIL_COLUMNS = [
    "case",
    "load s",
    "pending",
    "leased",
    "ending",
    "lease left",
    "kill→spawn",
    "HTTP up",
    "1st accepted",
    "pending done",
    "leased done",
    "90% final.",
    "finalized",
    "dead",
]


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="left" if name == "case" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def detail_row(r: Recovery) -> list[str]:
    return [
        r.case,
        f"{r.load_seconds:.1f}",
        str(r.pending_at_kill),
        str(r.running_at_kill),
        str(r.ending_at_kill),
        f"{r.lease_left_at_kill:.2f}" if r.running_at_kill else "-",
        f"{r.kill_to_spawn * 1000:.0f} ms",
        _seconds(r.http_up),
        _seconds(r.first_accepted),
        _seconds(r.pending_done),
        _seconds(r.running_done),
        _seconds(r.finalized_90),
        _seconds(r.ending_finalized),
        str(r.dead_jobs),
    ]


def render(console: Console, results: list[Recovery]) -> None:
    title = "Each repetition: jobs and sessions left at the kill, seconds from the restart's spawn"
    console.print(_table(title, DETAIL_COLUMNS, [detail_row(r) for r in results]))
    title = "Recovery after SIGKILL: median / max over the repetitions, seconds from the spawn"
    console.print(_table(title, SUMMARY_COLUMNS, summary_rows(results)))


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of the gateway's log file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def bench(args: argparse.Namespace, workdir: Path, console: Console) -> list[Recovery]:
    results: list[Recovery] = []
    load = Load(args.chats, args.turns, args.kill_after)
    async with AsyncExitStack() as stack:
        chosen = await cases(stack, workdir, args.pg, args.short_lease)
        for rep in range(args.repeats):
            for case in chosen:
                console.print(f"repetition {rep + 1}/{args.repeats}: {case.label} …")
                try:
                    result = await repetition(case, rep, load)
                except Exception:
                    log = case.config.path.parent / "gateway.log"
                    console.print(f"[red]failed; the end of {log}:\n" + log_tail(log))
                    raise
                console.print(
                    f"  {result.pending_at_kill} pending + {result.running_at_kill} leased jobs, "
                    f"{result.ending_at_kill} ending; HTTP up {result.http_up:.2f} s, all "
                    f"done {_seconds(result.work_done)} s after the spawn"
                )
                results.append(result)
    return results


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Recovery after SIGKILL (see module docstring).")
    parser.add_argument("--quick", action="store_true", help="40 chats, 1 repetition")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (quick: 1)")
    parser.add_argument("--chats", type=int, default=None, help="default 200 (quick: 40)")
    parser.add_argument("--turns", type=int, default=3, help="messages per chat before /new")
    parser.add_argument(
        "--kill-after", type=float, default=0.5, help="share of /new answers before the kill"
    )
    parser.add_argument("--short-lease", type=float, default=2.0, help="the short lease, s")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG, help="PostgreSQL admin DSN")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--dir", type=Path, default=None, help="where scratch files go")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.chats = args.chats or (40 if args.quick else 200)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    started = time.perf_counter()
    args.pg = None if args.no_pg else args.pg_dsn
    if args.pg is not None and (problem := pg_problem(args.pg)) is not None:
        console.print(f"[yellow]PostgreSQL at {args.pg} unreachable, skipped: {problem}")
        args.pg = None
    with tempfile.TemporaryDirectory(prefix="recovery-", dir=args.dir) as scratch:
        workdir = Path(scratch).resolve()
        document: dict[str, Any] = {
            "command": " ".join(["uv run python bench/recovery.py", *sys.argv[1:]]),
            "machine": machine_info(workdir),
        }
        results = asyncio.run(bench(args, workdir, console))
    render(console, results)
    elapsed = time.perf_counter() - started
    console.print(f"whole run: {elapsed:.0f} s; load average at the end: {load_average()}")
    if args.json is not None:
        document.update(
            repetitions=[{**asdict(r), "work_done": r.work_done} for r in results],
            run_seconds=elapsed,
            load_average_at_end=load_average(),
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
