"""Lifecycle benchmarks: end → commit latency, timer sweep at 1M sessions, job throughput.

    uv run python bench/lifecycle_bench.py end-to-commit [--sessions 200] [--json out.json]
    uv run python bench/lifecycle_bench.py sweep [--sizes 10000,1000000] [--due 1000]
    uv run python bench/lifecycle_bench.py jobs [--jobs 5000] [--lease 5]
    uv run python bench/lifecycle_bench.py all [--json out.json]

Each subcommand runs on SQLite and, unless `--no-pg`, on PostgreSQL (a scratch
database on the server of `--pg-dsn`, dropped afterwards), prints its table, and
with `--json` writes the figures, the command and the machine. The modules
`lifecycle_end`, `lifecycle_sweep` (with `lifecycle_seed`) and `lifecycle_jobs`
say what each one measures and how.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import lifecycle_end
import lifecycle_jobs
import lifecycle_sweep
from lifecycle_support import Backends, Report, load_average, machine, pg_problem

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _counts(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Lifecycle benchmarks (see module docstring).")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG, help="PostgreSQL admin DSN")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--dir", type=Path, default=None, help="where scratch files go")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    sub = parser.add_subparsers(dest="command", required=True)

    end = argparse.ArgumentParser(add_help=False)
    end.add_argument("--sessions", type=int, default=200, help="sessions ended per mode")
    end.add_argument("--exchanges", type=int, default=3, help="user+assistant pairs each")
    end.add_argument("--rate", type=float, default=20.0, help="paced ends per second")
    end.add_argument("--end-target", type=float, default=2.0, help="p95 target, seconds")

    sweep = argparse.ArgumentParser(add_help=False)
    sweep.add_argument("--sizes", type=_counts, default=[10_000, 1_000_000], help="stored sessions")
    sweep.add_argument("--pg-sizes", type=_counts, default=None, help="default: --sizes")
    sweep.add_argument("--due", type=int, default=1000, help="sessions with a due timer")
    sweep.add_argument("--per-chat", type=int, default=5, help="sessions per chat (1 active)")
    seeding = ("api", "bulk", "auto")
    sweep.add_argument(
        "--sqlite-seeding",
        choices=seeding,
        default="auto",
        help="how SQLite is filled (auto: api up to --api-upto sessions, bulk above)",
    )
    sweep.add_argument(
        "--pg-seeding", choices=seeding, default="bulk", help="how PostgreSQL is filled"
    )
    sweep.add_argument("--api-upto", type=int, default=100_000, help="for auto")
    sweep.add_argument("--seed-concurrency", type=int, default=512)
    sweep.add_argument("--claims", type=int, default=5, help="timed claims per store")
    sweep.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the control store (the largest store's chats, one session each)",
    )
    sweep.add_argument("--sweep-target", type=float, default=1.0, help="claim target, seconds")

    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("--jobs", type=int, default=5000, help="no-op jobs to drain")
    jobs.add_argument("--workers", type=int, default=2, help="workers draining them")
    jobs.add_argument("--lease", type=float, default=5.0, help="lease of the takeover test")
    jobs.add_argument("--held", type=int, default=8, help="jobs the dying worker holds")

    sub.add_parser("end-to-commit", parents=[end], help="end → commit latency")
    sub.add_parser("sweep", parents=[sweep], help="claim due timers among many sessions")
    sub.add_parser("jobs", parents=[jobs], help="job throughput and lease takeover")
    sub.add_parser("all", parents=[end, sweep, jobs], help="all three, in that order")
    args = parser.parse_args(argv)
    if getattr(args, "pg_sizes", None) is None and hasattr(args, "sizes"):
        args.pg_sizes = args.sizes
    return args


async def run(args: argparse.Namespace, backends: Backends, console: Console) -> list[Report]:
    reports: list[Report] = []
    if args.command in ("end-to-commit", "all"):
        console.print("end → commit …")
        reports.append(
            await lifecycle_end.bench(
                backends,
                sessions=args.sessions,
                exchanges=args.exchanges,
                rate=args.rate,
                target=args.end_target,
            )
        )
    if args.command in ("sweep", "all"):
        console.print("sweep …")
        reports += await lifecycle_sweep.bench(backends, args, console)
    if args.command in ("jobs", "all"):
        console.print("jobs …")
        reports += await lifecycle_jobs.bench(
            backends, jobs=args.jobs, workers=args.workers, lease=args.lease, held=args.held
        )
    return reports


def render(console: Console, report: Report) -> None:
    table = Table(title=report.title)
    for number, name in enumerate(report.columns):
        table.add_column(name, justify="left" if number < 2 else "right", no_wrap=True)
    for row in report.rows:
        table.add_row(*row)
    console.print(table)
    for note in report.notes:
        console.print(f"  • {note}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Wide enough for the tables when the output is a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 140)
    started = time.perf_counter()
    notes: list[str] = []
    pg = None if args.no_pg else args.pg_dsn
    if pg is not None and (problem := pg_problem(pg)) is not None:
        notes.append(f"PostgreSQL at {pg} unreachable, skipped: {problem}")
        pg = None
    with tempfile.TemporaryDirectory(prefix="lifecycle-", dir=args.dir) as scratch:
        workdir = Path(scratch)
        document: dict[str, Any] = {
            "command": " ".join(["uv run python bench/lifecycle_bench.py", *sys.argv[1:]]),
            "machine": machine(workdir),
        }
        reports = asyncio.run(run(args, Backends(workdir, pg), console))
    for report in reports:
        render(console, report)
    for note in notes:
        console.print(f"[yellow]{note}")
    elapsed = time.perf_counter() - started
    console.print(f"whole run: {elapsed:.0f} s; load average at the end: {load_average()}")
    if args.json is not None:
        document.update(
            reports=[{"title": r.title, "figures": r.data, "notes": r.notes} for r in reports],
            notes=notes,
            run_seconds=elapsed,
            load_average_at_end=load_average(),
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
