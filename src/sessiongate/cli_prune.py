"""`sessiongate prune [--dry-run]`: apply the retention rules now."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sessiongate.cli_support import (
    ConfigOption,
    JsonOption,
    StoreOption,
    iso,
    load_config,
    opened_store,
    print_json,
    progress,
    run_command,
)
from sessiongate.clock import SystemClock, system_random
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine
from sessiongate.lifecycle.retention import Retention, RetentionReport

console = Console(highlight=False)
#: At most this many session ids are listed in the table output (all of them in --json).
LISTED = 50


def report_json(report: RetentionReport) -> dict[str, Any]:
    """The `prune --json` shape (a public interface, see docs/cli.md)."""
    removed = report.removed
    return {
        "dry_run": report.dry_run,
        "ended_idle": [
            {
                "session_id": s.id,
                "session_key": s.key,
                "last_activity_at": iso(s.last_activity_at),
            }
            for s in report.ended
        ],
        "removed_sessions": list(removed.sessions),
        "removed_entries": removed.entries,
        "removed_jobs": removed.jobs,
        "removed_dead_letters": list(removed.dead_letters),
        "removed_leases": removed.leases,
    }


def prune(
    store: StoreOption = None,
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; change nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply the retention rules now: end long-idle conversations, remove what has expired.

    Idle conversations end with reason `prune` through the one funnel: their commits
    and hooks are enqueued for the gateway's workers. Removed sessions take their
    ledgers with them, only once every configured provider has received them.
    """
    settings = load_config(config, store=store)

    async def work() -> RetentionReport:
        async with opened_store(settings.store) as opened:
            clock = SystemClock()
            engine = Engine(
                opened, settings.lifecycle(), clock=clock, ids=IdGenerator(clock, system_random())
            )
            retention = Retention(engine, settings.retention_policy(), clock=clock)
            with progress() as bar:
                task = bar.add_task("pruning" if not dry_run else "looking", total=None)
                return await retention.run_once(
                    dry_run=dry_run, progress=lambda n: bar.advance(task, n)
                )

    report = run_command(work)
    if as_json:
        print_json(report_json(report))
        return
    _print(report)


def _print(report: RetentionReport) -> None:
    removed = report.removed
    verb = "would" if report.dry_run else "did"
    table = Table(title=f"retention ({'dry run' if report.dry_run else 'applied'})")
    table.add_column("artefact")
    table.add_column("count", justify="right")
    table.add_row("idle sessions ended (prune)", str(len(report.ended)))
    table.add_row("ended sessions removed", str(len(removed.sessions)))
    table.add_row("ledger entries removed", str(removed.entries))
    table.add_row("jobs removed", str(removed.jobs))
    table.add_row("dead letters removed", str(len(removed.dead_letters)))
    table.add_row("expired leases removed", str(removed.leases))
    console.print(table)
    for title, ids in (
        ("ended", [s.id for s in report.ended]),
        ("removed", list(removed.sessions)),
    ):
        if ids:
            shown = ", ".join(escape(i) for i in ids[:LISTED])
            more = f" and {len(ids) - LISTED} more (see --json)" if len(ids) > LISTED else ""
            console.print(f"sessions {verb} {title}: {shown}{more}")
    if removed.dead_letters:
        console.print(
            f"dead letters {verb} go (job ids): "
            + ", ".join(str(i) for i in removed.dead_letters[:LISTED])
        )
    if report.empty_run:
        console.print("nothing to prune")
