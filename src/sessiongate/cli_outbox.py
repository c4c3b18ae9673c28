"""`sessiongate outbox …`: the depth of the outbox, its dead letters, redrive and drop.

A dead job is a consumer that exhausted its retry policy; while it is dead, a
session it gates stays `ending` (never silently `finalized`). Fix the cause, then
`redrive` it; `drop` discards a dead job that gates no session's finalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sessiongate.cli_support import (
    JsonOption,
    StoreOption,
    dead_letter_json,
    fail,
    iso,
    opened_store,
    print_json,
    progress,
    run_command,
    short_time,
)
from sessiongate.clock import SystemClock
from sessiongate.errors import ConfigError, Conflict, NotFound
from sessiongate.models import DeadLetter, Job, JobState, OutboxStats
from sessiongate.store import Store

app = typer.Typer(
    no_args_is_help=True,
    help="Watch the outbox, and redrive or drop its dead jobs.",
)
console = Console()

# Dead jobs redriven per store call: each call is one short transaction, and the
# bar moves between them.
REDRIVE_BATCH = 100
STATES = tuple(JobState)


# -- status --------------------------------------------------------------------------------


def stats_json(stats: OutboxStats, *, now_age_s: float | None) -> dict[str, Any]:
    """The public JSON shape of `outbox status`."""
    by_kind = {
        kind: {state.value: int(counts.get(state.value, 0)) for state in STATES}
        for kind, counts in sorted(stats.by_kind.items())
    }
    return {
        "pending": stats.pending,
        "running": stats.running,
        "dead": stats.dead,
        "done": stats.done,
        "oldest_pending_at": iso(stats.oldest_pending_at),
        "oldest_pending_age_s": now_age_s,
        "by_kind": by_kind,
    }


@app.command()
def status(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """How many jobs are pending, running, dead and done, per kind, and the oldest wait."""

    async def work() -> OutboxStats:
        async with opened_store(store) as opened:
            return await opened.outbox_stats()

    stats = run_command(work)
    age = None
    if stats.oldest_pending_at is not None:
        # A pending job scheduled for later (a retry's backoff) has not waited yet.
        waited = (SystemClock().now() - stats.oldest_pending_at).total_seconds()
        age = round(max(0.0, waited), 3)
    shown = stats_json(stats, now_age_s=age)
    if as_json:
        print_json(shown)
        return
    table = Table(title="outbox")
    table.add_column("kind")
    for state in STATES:
        table.add_column(state.value, justify="right")
    for kind, counts in shown["by_kind"].items():
        table.add_row(kind, *(str(counts[state.value]) for state in STATES))
    table.add_row("[bold]total[/]", *(f"[bold]{shown[state.value]}[/]" for state in STATES))
    console.print(table)
    if age is not None:
        oldest = shown["oldest_pending_at"]
        console.print(f"oldest pending job: due since {oldest} ({age:.0f}s)", highlight=False)
    if stats.dead:
        console.print(
            f"[yellow]{stats.dead} dead job(s)[/]: see `sessiongate outbox dead`, "
            "then `sessiongate outbox redrive`"
        )


# -- dead ----------------------------------------------------------------------------------


@app.command()
def dead(
    store: StoreOption = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List the dead letters (jobs that exhausted their retries), oldest first."""

    async def work() -> list[DeadLetter]:
        async with opened_store(store) as opened:
            return await opened.dead_letters(limit=limit)

    letters = run_command(work)
    if as_json:
        print_json([dead_letter_json(letter) for letter in letters])
        return
    if not letters:
        console.print("no dead jobs")
        return
    console.print(f"[bold]{len(letters)} dead job(s)[/], oldest first")
    # One block per letter rather than a table: the error gets the full width.
    for letter in letters:
        provider = _provider(letter)
        target = f" → {provider}" if provider else ""
        console.print(
            f"\n[bold]job {letter.job_id}[/]  {escape(letter.kind)}{escape(target)}  "
            f"session {escape(letter.session_id or '-')}  attempts {letter.attempts}  "
            f"died {short_time(letter.died_at)} UTC",
            highlight=False,
        )
        console.print(Padding(Text(letter.last_error), (0, 0, 0, 2), expand=False))


def _provider(letter: DeadLetter) -> str | None:
    shown: str | None = dead_letter_json(letter)["provider"]
    return shown


# -- redrive -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redriven:
    """What a redrive did: how many jobs went back to pending; named ones that were not dead."""

    count: int
    not_dead: list[int]


async def _redrive_named(store: Store, job_ids: Sequence[int]) -> Redriven:
    # Every id is checked before anything is redriven, so a typo changes nothing.
    not_dead: list[int] = []
    for job_id in job_ids:
        job = await store.get_job(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id}; nothing was redriven")
        if job.state is not JobState.DEAD:
            not_dead.append(job_id)
    chosen = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in not_dead]
    count = 0
    with progress() as bar:
        task = bar.add_task("redriving", total=len(chosen))
        for start in range(0, len(chosen), REDRIVE_BATCH):
            batch = chosen[start : start + REDRIVE_BATCH]
            count += await store.redrive(batch, at=SystemClock().now())
            bar.advance(task, len(batch))
    return Redriven(count, not_dead)


async def _redrive_all(store: Store) -> Redriven:
    # Bounded by the dead count at the start: a job that dies again meanwhile (a live
    # worker ran it at once) waits for the next redrive instead of looping here.
    total = (await store.outbox_stats()).dead
    count = 0
    with progress() as bar:
        task = bar.add_task("redriving", total=total)
        while count < total:
            letters = await store.dead_letters(limit=min(REDRIVE_BATCH, total - count))
            if not letters:
                break
            moved = await store.redrive([d.job_id for d in letters], at=SystemClock().now())
            if moved == 0:
                break
            count += moved
            bar.update(task, completed=count)
    return Redriven(count, [])


@app.command()
def redrive(
    job_ids: Annotated[
        list[int] | None, typer.Argument(help="Ids of dead jobs to send back.", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Redrive every dead job.")] = False,
    store: StoreOption = None,
) -> None:
    """Send dead jobs (these ids, or --all) back to pending, with their attempts reset."""

    async def work() -> Redriven:
        if all_ == bool(job_ids):
            raise ConfigError("name the dead jobs to redrive by id, or pass --all (not both)")
        async with opened_store(store) as opened:
            if job_ids:
                return await _redrive_named(opened, job_ids)
            return await _redrive_all(opened)

    done = run_command(work)
    for job_id in done.not_dead:
        console.print(f"[yellow]job {job_id} is not dead; left as it is[/]")
    console.print(f"redrove {done.count} job(s): they are pending and run when a worker is free")


# -- drop ----------------------------------------------------------------------------------


@app.command()
def drop(
    job_id: Annotated[int, typer.Argument(help="The id of the dead job.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    store: StoreOption = None,
) -> None:
    """Discard a dead job for good (its effect never happens); gating jobs cannot be dropped."""

    async def check() -> Job:
        async with opened_store(store) as opened:
            return await _droppable(opened, job_id)

    job = run_command(check)
    what = f"job {job_id} ({job.kind}, session {job.session_id or '-'})"
    if not yes and not typer.confirm(f"drop {what} for good?", err=True):
        fail("nothing was dropped")

    async def work() -> bool:
        async with opened_store(store) as opened:
            return await opened.drop_dead_job(job_id)

    if not run_command(work):
        fail(f"job {job_id} is not dead any more (redriven meanwhile?); nothing was dropped")
    console.print(f"dropped {what}", highlight=False)


async def _droppable(store: Store, job_id: int) -> Job:
    """The dead job `job_id`, checked up front so the prompt names a job that can go."""
    job = await store.get_job(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    if job.state is not JobState.DEAD:
        raise Conflict(f"job {job_id} is {job.state}, not dead: only a dead job can be dropped")
    if job.gates_finalize:
        raise Conflict(
            f"job {job_id} gates the finalization of session {job.session_id}; "
            "fix its cause and redrive it instead of dropping it"
        )
    return job
