"""`sessiongate providers status|backfill` and `sessiongate doctor`."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sessiongate.cli_support import ConfigOption, JsonOption, fail, load_config, run_command
from sessiongate.config import Settings
from sessiongate.errors import SessionGateError
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.lifecycle.consumers import backfill_jobs
from sessiongate.memory.provider import MemoryProvider
from sessiongate.memory.registry import build_providers
from sessiongate.models import EndReason, SessionState
from sessiongate.store import default_store_url, open_store, parse_store_url
from sessiongate.store.base import Store
from sessiongate.store.migrations import latest_version

providers_app = typer.Typer(no_args_is_help=True, help="Memory providers: sync state, backfill.")
_out = Console()
_err = Console(stderr=True)
#: Active sessions looked at for delivery lag (the newest first).
LAG_SAMPLE = 10_000
#: Timers overdue by more than this make `doctor` fail: the sweeper is not keeping up.
TIMER_LAG_SECONDS = 120.0
#: Less free space than this on the SQLite store's disk makes `doctor` fail.
MIN_FREE_BYTES = 512 * 1024 * 1024


async def _reachable(provider: MemoryProvider) -> bool | None:
    """The provider's own health check, or None when it has none."""
    check = getattr(provider, "health", None)
    if check is None:
        return None
    try:
        return bool(await asyncio.wait_for(check(), 10))
    except (TimeoutError, OSError, SessionGateError):
        return False


@dataclass
class ProviderRow:
    """One provider's sync state (the `providers status --json` shape)."""

    provider: str
    reachable: bool | None
    lag_turns: int = 0
    sessions_behind: int = 0
    failing_sessions: int = 0
    last_commit_at: str | None = None
    dead_jobs: int = 0


async def provider_rows(store: Store, providers: dict[str, MemoryProvider]) -> list[ProviderRow]:
    """Per provider: reachable, delivery lag over active sessions, last commit, failures."""
    rows = {name: ProviderRow(name, await _reachable(p)) for name, p in providers.items()}
    for session in await store.list_sessions(state=SessionState.ACTIVE, limit=LAG_SAMPLE):
        cursors = {c.provider: c for c in await store.cursors(session.id)}
        for name, row in rows.items():
            cursor = cursors.get(name)
            behind = session.turn_count - (cursor.delivered_seq if cursor else 0)
            row.lag_turns += max(0, behind)
            row.sessions_behind += behind > 0
            if cursor is None:
                continue
            row.failing_sessions += cursor.last_error is not None
            if cursor.last_commit_at is not None:
                stamp = cursor.last_commit_at.isoformat()
                row.last_commit_at = max(stamp, row.last_commit_at or stamp)
    for dead in await store.dead_letters(limit=10_000):
        owner = rows.get(str(dead.payload.get("provider")))
        if owner is not None:
            owner.dead_jobs += 1
    return list(rows.values())


@providers_app.command("status")
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Per provider: reachable, delivery lag, last commit, failures."""
    settings = load_config(config)

    async def work() -> list[ProviderRow]:
        store = await open_store(settings.store or default_store_url(), migrate=False)
        try:
            return await provider_rows(
                store, build_providers(settings.memory.providers, store=store)
            )
        finally:
            await store.close()

    rows = run_command(work)
    if as_json:
        typer.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    table = Table(title="memory providers")
    for column in fields(ProviderRow):
        table.add_column(column.name)
    for row in rows:
        table.add_row(*(str(v) for v in asdict(row).values()))
    _out.print(table)


@providers_app.command("backfill")
def backfill(
    name: Annotated[str, typer.Argument(help="The configured provider to replay the ledger into.")],
    config: ConfigOption = None,
) -> None:
    """Replay every ended session's ledger into a newly added provider (same idempotency keys).

    Run the gateway (or `sessiongate run`) to execute the enqueued commits; live
    sessions reach the provider at their next checkpoint or end.
    """
    settings = load_config(config)
    if name not in settings.memory.providers:
        known = ", ".join(settings.memory.providers)
        fail(f"provider {name!r} is not configured (configured: {known})")

    async def work() -> int:
        store = await open_store(settings.store or default_store_url(), migrate=True)
        enqueued = 0
        try:
            sessions = [
                s
                for s in await store.list_sessions(limit=10_000_000)
                if s.state is not SessionState.ACTIVE
                and s.turn_count
                and s.end_reason is not EndReason.FORGET
            ]
            with Progress(console=_err, disable=not _err.is_terminal) as progress:
                task = progress.add_task(f"backfilling {name}", total=len(sessions))
                for session in sessions:
                    jobs = backfill_jobs(session, name)
                    enqueued += len(await store.enqueue(jobs, at=datetime.now(UTC)))
                    progress.advance(task)
        finally:
            await store.close()
        return enqueued

    count = run_command(work)
    _out.print(f"enqueued commits of {count} ended sessions to {name}")


@dataclass
class Check:
    """One line of `doctor`."""

    name: str
    ok: bool
    detail: str


async def run_checks(settings: Settings) -> list[Check]:
    """Store reachable and migrated, providers reachable, hooks valid, timers, disk."""
    parsed = parse_store_url(settings.store or default_store_url())
    _, problems = HookDispatcher.load(settings.hooks_directory())
    hooks = "; ".join(map(str, problems)) or f"{settings.hooks_directory() or 'none'} ok"
    checks = [Check("hooks", not problems, hooks)]
    if parsed.path is not None:
        free = shutil.disk_usage(parsed.path.parent if parsed.path.parent.exists() else "/").free
        checks.append(Check("disk", free >= MIN_FREE_BYTES, f"{free / 2**30:.1f} GiB free"))
    try:
        store = await open_store(parsed.raw, migrate=False)
    except SessionGateError as exc:
        return [Check("store", False, f"{parsed.redacted()}: {exc}"), *checks]
    try:
        return [*await _store_checks(store, settings, parsed.dialect), *checks]
    finally:
        await store.close()


async def _store_checks(store: Store, settings: Settings, dialect: str) -> list[Check]:
    version, latest = await store.schema_version(), latest_version(dialect)
    migrated = "" if version == latest else "; run `sessiongate migrate`"
    checks = [Check("store", version == latest, f"schema {version} (code: {latest}){migrated}")]
    for name, provider in build_providers(settings.memory.providers, store=store).items():
        reachable = await _reachable(provider)
        word = {True: "reachable", False: "unreachable", None: "built in"}[reachable]
        checks.append(Check(f"provider {name}", reachable is not False, word))
    due = await store.next_timer_due()
    lag = 0.0 if due is None else (datetime.now(UTC) - due).total_seconds()
    when = "none due" if due is None else f"oldest due {max(0.0, lag):.0f}s ago"
    checks.append(Check("timers", lag <= TIMER_LAG_SECONDS, when))
    dead = len(await store.dead_letters(limit=10_000))
    checks.append(Check("dead letters", dead == 0, f"{dead} (see `sessiongate outbox dead`)"))
    return checks


def doctor(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check the store, providers, hooks, timers and disk; exit 1 if any check fails."""
    checks = run_command(lambda: run_checks(load_config(config)))
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for check in checks:
            mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
            _out.print(f"{mark} {check.name}: ", end="")
            _out.print(check.detail, markup=False, highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
