"""Seeding a store for the operator commands, through the lifecycle itself.

Route, record, end, and the outbox workers: the store holds what a running
gateway would have left in it. The store is closed again before a command
runs, and the command opens it by URL, as an operator's would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from typer.testing import CliRunner, Result

from sessiongate.cli import app
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.lifecycle.runtime import Lifecycle
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.memory.registry import build_providers
from sessiongate.models import ChatType, EndReason, Role, Source
from sessiongate.store import Store, open_store

T = TypeVar("T")

ALICE = Source(platform="terminal", chat_id="alice", chat_type=ChatType.DM, user_id="alice")
BOB = Source(platform="api", chat_id="bob", chat_type=ChatType.DM, user_id="bob")
ALICE_TURNS = (
    (Role.USER, "Hello! I take my coffee black."),
    (Role.ASSISTANT, "Noted: black coffee."),
    (Role.USER, "And tea with milk."),
)
BOB_TURNS = ((Role.USER, "What is on today?"), (Role.ASSISTANT, "Nothing yet."))

runner = CliRunner()


@dataclass(frozen=True, slots=True)
class Seeded:
    """The conversations in a seeded store, and how to run a command against it."""

    url: str
    # Alice's first session: three turns, ended with /new and finalized by the workers.
    finalized_id: str
    # The session Alice's conversation continues in: active, no turns yet.
    alice_id: str
    # Bob's session: active, two turns, never delivered anywhere.
    bob_id: str

    def invoke(self, *args: str, input: str | None = None) -> Result:
        """Run `sessiongate ARGS --store URL`."""
        return runner.invoke(app, [*args, "--store", self.url], input=input)

    def with_store(self, work: Callable[[Store], Awaitable[T]]) -> T:
        """Run `work` on the store, opened for it and closed after."""

        async def run() -> T:
            store = await open_store(self.url)
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(run())


def lifecycle_for(store: Store) -> Lifecycle:
    """The lifecycle of a gateway configured with the built-in local memory provider."""
    hooks, _ = HookDispatcher.load(None, entry_points=False)
    providers = build_providers({"local": {}}, store=store)
    return Lifecycle(
        store, LifecycleSettings(providers=("local",)), providers=providers, hooks=hooks
    )


async def seed(store: Store) -> tuple[str, str, str]:
    """Talk as Alice, `/new`, drain the outbox; then talk as Bob (nothing drained)."""
    lifecycle = lifecycle_for(store)
    engine = lifecycle.engine
    first = (await engine.route(ALICE)).session
    for role, text in ALICE_TURNS:
        await engine.record(first.id, role, text)
    alice = (await engine.new_session(ALICE, reason=EndReason.NEW)).session
    await lifecycle.drain()
    bob = (await engine.route(BOB)).session
    for role, text in BOB_TURNS:
        await engine.record(bob.id, role, text)
    return first.id, alice.id, bob.id


async def kill_jobs(store: Store, kind: str, session_id: str, error: str = "boom") -> list[int]:
    """Claim the due jobs of `kind` for `session_id` and bury them, as a worker giving up."""
    now = datetime.now(UTC)
    claimed = await store.claim_jobs("cli-test", at=now, lease_seconds=30, kinds=[kind], limit=10)
    buried: list[int] = []
    for job in claimed:
        if job.session_id == session_id:
            assert await store.bury_job(job.id, job.fencing_token, error=error, at=now)
            buried.append(job.id)
        else:
            assert await store.retry_job(job.id, job.fencing_token, run_after=now, error="", at=now)
    return buried


def json_of(seeded: Seeded, *args: str) -> Any:
    """Run a command with `--json` and parse what it printed."""
    result = seeded.invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result: Result, *needles: str) -> None:
    """The command failed with exit 1 and one error line holding every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
