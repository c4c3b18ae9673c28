"""Memory benchmarks: delivery throughput, recall latency, recall with a hanging provider.

Each is measured side by side in one run (this machine is shared and noisy):

- `delivery` (`bench/memory_delivery.py`): turns/s through `MemorySync.deliver`,
  batched (the provider's configured `max_batch`) against one by one
  (`max_batch=1`), to the local provider on SQLite and to a real OpenViking 0.5.2
  server (its cached venv, offline, with the fake model of the integration tests);
- `recall` (`bench/memory_recall.py`): `LocalProvider.recall` latency with 10,000
  archived sessions of 200 users, on SQLite and on PostgreSQL;
- `hanging` (`bench/memory_recall.py`): `Recaller.recall` wall time on a turn with
  the default deadline, with and without a provider that never answers;
- `all`: the three, in that order.

Usage:

    uv run python bench/memory_bench.py all [--json out.json]
    uv run python bench/memory_bench.py delivery [--sessions 20 --turns 50 --ov-sessions 8]
    uv run python bench/memory_bench.py recall [--archived 10000 --users 200 --queries 1000]
    uv run python bench/memory_bench.py hanging [--recalls 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

import memory_delivery
import memory_recall
from memory_support import machine, uptime

Bench = Callable[[Path, argparse.Namespace, Console], dict[str, Any]]
BENCHES: dict[str, Bench] = {
    "delivery": memory_delivery.run,
    "recall": memory_recall.run_recall,
    "hanging": memory_recall.run_hanging,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Memory benchmarks (see the module docstring).")
    parser.add_argument("command", choices=[*BENCHES, "all"])
    parser.add_argument("--users", type=int, default=200, help="users of the generated chats")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generated chats")
    delivery = parser.add_argument_group("delivery")
    delivery.add_argument("--sessions", type=int, default=20, help="local sessions per mode")
    delivery.add_argument("--turns", type=int, default=50, help="turns per delivered session")
    delivery.add_argument(
        "--ov-sessions", type=int, default=8, help="OpenViking sessions per mode (0: skip it)"
    )
    recall = parser.add_argument_group("recall")
    recall.add_argument("--archived", type=int, default=10_000, help="archived sessions")
    recall.add_argument("--queries", type=int, default=1000, help="timed recalls per store")
    recall.add_argument("--warmup", type=int, default=20, help="untimed recalls first")
    recall.add_argument(
        "--pg-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server (admin DSN); a scratch database is created and dropped",
    )
    recall.add_argument("--no-postgres", action="store_true", help="SQLite only")
    hanging = parser.add_argument_group("hanging")
    hanging.add_argument("--recalls", type=int, default=200, help="turns per case")
    hanging.add_argument(
        "--hanging-archived", type=int, default=2_000, help="archived sessions behind the recalls"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the scratch files go")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Wide enough for the tables when the output is a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 140)
    chosen = list(BENCHES) if args.command == "all" else [args.command]
    document: dict[str, Any] = {
        "command": " ".join(["uv run python bench/memory_bench.py", *sys.argv[1:]]),
        "machine": machine(),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memory-bench-", dir=args.dir) as scratch:
        for name in chosen:
            began = time.perf_counter()
            document[name] = BENCHES[name](Path(scratch), args, console)
            document[name]["seconds"] = time.perf_counter() - began
            console.print(f"[dim]{name}: {document[name]['seconds']:.0f} s")
    document["run_seconds"] = time.perf_counter() - started
    document["uptime_end"] = uptime()
    console.print(f"whole run: {document['run_seconds']:.0f} s")
    console.print(f"at the start: {document['machine']['uptime_start']}")
    console.print(f"at the end:   {document['uptime_end']}")
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
