"""Delivery throughput: `MemorySync.deliver`, batched against one by one.

Each target gets two sets of sessions with the same number of turns: one set
is delivered by a provider with its configured `max_batch`, the other by the
same provider kind with `max_batch=1` (a provider name of its own, so each has
its own cursors). Sessions of the two modes are delivered alternately, one
after another (one worker), and only `deliver` is timed: reconciling the
cursor, reading each batch from the ledger, sending it and advancing the
cursor. One more session per mode goes first as an untimed warm-up (connections,
and OpenViking's first use of an account, which takes most of a second).
Afterwards every cursor must stand at its session's last seq, and the provider
must hold what was sent (by its own count).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from memory_corpus import Corpus
from memory_support import Ledger, table
from sessiongate.clock import SystemClock
from sessiongate.memory.local import DEFAULT_MAX_BATCH
from sessiongate.memory.openviking import (
    MAX_BATCH,
    AuthMode,
    OpenVikingProvider,
    OpenVikingSettings,
)
from sessiongate.memory.provider import MemoryProvider, ProviderSession
from sessiongate.memory.registry import build_providers
from sessiongate.memory.sync import MemorySync
from sessiongate.models import Session
from sessiongate.store import open_store
from sessiongate.store.archive import archive_of

if TYPE_CHECKING:
    from integration.openviking.server import OpenVikingServer

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "SESSIONGATE_BENCH_OPENVIKING_KEY"
BATCHED, SINGLE = "batched", "one by one"


@dataclass
class Delivery:
    """Turns delivered to one target in one mode, and the time `deliver` took."""

    target: str
    mode: str
    max_batch: int
    sessions: int
    turns: int
    calls: int = 0
    seconds: float = 0.0

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.seconds


Lane = tuple[str, MemoryProvider, list[Session]]


async def race(sync: MemorySync, target: str, lanes: Sequence[Lane]) -> list[Delivery]:
    """Deliver every session, one session of each lane in turn; time `deliver` only.

    The first session of each lane is a warm-up, delivered but not counted: it
    pays for connections, and at OpenViking for the account's first use.
    """
    results = [
        Delivery(target, mode, p.max_batch, len(s) - 1, sum(x.turn_count for x in s[1:]))
        for mode, p, s in lanes
    ]
    for index in range(max(len(sessions) for _, _, sessions in lanes)):
        for result, (_, provider, sessions) in zip(results, lanes, strict=True):
            if index >= len(sessions):
                continue
            session = sessions[index]
            started = time.perf_counter()
            reached = await sync.deliver(provider, session, upto_seq=session.turn_count)
            elapsed = time.perf_counter() - started
            if reached != session.turn_count:
                raise AssertionError(f"{provider.name}: {session.id} reached only {reached}")
            if index > 0:
                result.seconds += elapsed
                result.calls += math.ceil(session.turn_count / provider.max_batch)
    for _, provider, sessions in lanes:
        for session in sessions:
            cursor = await sync.store.get_cursor(provider.name, session.id)
            if cursor.delivered_seq != session.turn_count:
                raise AssertionError(f"{provider.name}: cursor of {session.id} is off")
    return results


async def local(workdir: Path, args: argparse.Namespace) -> list[Delivery]:
    """The local provider on a SQLite store, configured through the registry."""
    store = await open_store(f"sqlite:///{workdir / 'delivery-local.db'}")
    try:
        ledger = Ledger(store, Corpus(args.users, seed=args.seed))
        batched = await ledger.sessions(args.sessions + 1, args.turns)
        single = await ledger.sessions(args.sessions + 1, args.turns)
        providers = build_providers(
            {"local": {}, "local-1": {"kind": "local", "max_batch": 1}}, store=store
        )
        sync = MemorySync(store, providers, clock=SystemClock())
        lanes = [(BATCHED, providers["local"], batched), (SINGLE, providers["local-1"], single)]
        results = await race(sync, "local, SQLite", lanes)
        archive = archive_of(store)
        for session in batched + single:
            if await archive.staged_count(session.id) != session.turn_count:
                raise AssertionError(f"local holds the wrong count for {session.id}")
        return results
    finally:
        await store.close()


@contextmanager
def openviking_server(root: Path) -> Iterator[OpenVikingServer]:
    """The real OpenViking server of the integration tests, with their fake model."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from integration.openviking.fake_model import DIMENSION, FakeModel, ModelServer
    from integration.openviking.server import OpenVikingServer, ensure_installed

    model = ModelServer(FakeModel())
    model.start()
    try:
        server = OpenVikingServer(
            ensure_installed(), root, model_url=model.base_url, dimension=DIMENSION
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        model.stop()


async def openviking(
    workdir: Path, url: str, root_key: str, args: argparse.Namespace
) -> list[Delivery]:
    """OpenViking over HTTP, sessions in a fresh account; the ledger in a SQLite store."""
    store = await open_store(f"sqlite:///{workdir / 'delivery-openviking.db'}")
    account = f"bench-{uuid.uuid4().hex[:8]}"
    environ = {KEY_ENV: root_key}

    def settings(name: str, max_batch: int) -> OpenVikingSettings:
        return OpenVikingSettings(
            endpoint=url, auth=AuthMode.TRUSTED, account=account, key_env=KEY_ENV,
            name=name, max_batch=max_batch,
        )  # fmt: skip

    try:
        ledger = Ledger(store, Corpus(args.users, seed=args.seed + 1))
        batched = await ledger.sessions(args.ov_sessions + 1, args.turns)
        single = await ledger.sessions(args.ov_sessions + 1, args.turns)
        async with (
            OpenVikingProvider(settings("openviking", MAX_BATCH), environ=environ) as many,
            OpenVikingProvider(settings("openviking-1", 1), environ=environ) as one,
        ):
            sync = MemorySync(store, {many.name: many, one.name: one}, clock=SystemClock())
            lanes = [(BATCHED, many, batched), (SINGLE, one, single)]
            results = await race(sync, "OpenViking 0.5.2", lanes)
            for provider, sessions in ((many, batched), (one, single)):
                for session in sessions:
                    held = await provider.uncommitted_count(ProviderSession.of(session))
                    if held != session.turn_count:
                        raise AssertionError(f"OpenViking holds {held} for {session.id}")
        return results
    finally:
        await store.close()


def run(workdir: Path, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Both targets, both modes; the table, the ratios and the raw figures."""
    console.print(f"delivery: local, {args.sessions} sessions x {args.turns} turns per mode …")
    results = asyncio.run(local(workdir, args))
    notes: list[str] = []
    if args.ov_sessions > 0:
        console.print("delivery: starting the OpenViking server …")
        started = time.perf_counter()
        with openviking_server(workdir / "openviking") as server:
            from integration.openviking.server import ROOT_KEY

            notes.append(f"OpenViking server healthy after {time.perf_counter() - started:.1f} s")
            console.print(
                f"delivery: OpenViking, {args.ov_sessions} sessions x {args.turns} turns per mode …"
            )
            results += asyncio.run(openviking(workdir, server.url, ROOT_KEY, args))
    shown = table(
        "delivery: MemorySync.deliver, batched vs one by one (commits not timed)",
        ["provider", "mode", "max_batch", "sessions", "turns", "calls", "s", "turns/s", "ms/turn"],
        left=2,
    )
    for r in results:
        shown.add_row(
            r.target, r.mode, str(r.max_batch), str(r.sessions), f"{r.turns:,}", f"{r.calls:,}",
            f"{r.seconds:.2f}", f"{r.turns_per_s:,.0f}", f"{r.seconds / r.turns * 1000:.2f}",
        )  # fmt: skip
    console.print(shown)
    ratios: dict[str, float] = {}
    for target in dict.fromkeys(r.target for r in results):
        pair = {r.mode: r for r in results if r.target == target}
        ratios[target] = pair[BATCHED].turns_per_s / pair[SINGLE].turns_per_s
        console.print(f"  {target}: batched / one by one = {ratios[target]:.1f}x")
    for note in notes:
        console.print(f"  {note}")
    return {
        "local_default_max_batch": DEFAULT_MAX_BATCH,
        "results": [asdict(r) | {"turns_per_s": r.turns_per_s} for r in results],
        "batched_over_one_by_one": ratios,
        "notes": notes,
    }
