"""`sessiongate sessions …`: list, show, export and end sessions, as an operator.

Reads go straight to the store; `end` goes through the one funnel
(`Engine.end_session`) so an operator's end enqueues exactly the consumers any
other end does. No command here runs those consumers: the workers of a running
gateway (any replica) do, and the session is `finalized` once they all succeeded.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sessiongate.cli_support import (
    ConfigOption,
    JsonOption,
    StoreOption,
    choice,
    entry_json,
    iso,
    job_json,
    load_config,
    opened_store,
    print_json,
    progress,
    run_command,
    session_json,
    short_time,
    stdout_is_terminal,
)
from sessiongate.clock import SystemClock, system_random
from sessiongate.config import Settings
from sessiongate.errors import ConfigError, Conflict, NotFound
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine
from sessiongate.models import Cursor, EndReason, Entry, Job, JobState, Session, SessionState
from sessiongate.store import Store
from sessiongate.validation import check_identifier

app = typer.Typer(
    no_args_is_help=True,
    help="Inspect, export and end sessions.",
)
console = Console()

# Entries read per store call while exporting: bounded memory for any ledger size.
EXPORT_PAGE = 500
EXPORT_FORMATS = ("jsonl", "markdown")
# The jobs `show` lists: every consumer not done yet, the dead ones included.
UNFINISHED = (JobState.PENDING, JobState.RUNNING, JobState.DEAD)

SessionId = Annotated[str, typer.Argument(help="The session id.", show_default=False)]


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session with what `show` reports about it."""

    session: Session
    cursors: list[Cursor]
    jobs: list[Job]

    def to_json(self) -> dict[str, Any]:
        """The `sessions show --json` object: a session plus its unfinished jobs."""
        return {**session_json(self.session, self.cursors), "pending_jobs": self.jobs_json()}

    def jobs_json(self) -> list[dict[str, Any]]:
        """The unfinished jobs, in their public shape."""
        return [job_json(job) for job in self.jobs]


async def _require(store: Store, session_id: str) -> Session:
    session = await store.get_session(session_id)
    if session is None:
        raise NotFound(f"no session with id {session_id!r}")
    return session


async def _unfinished_jobs(store: Store, session_id: str) -> list[Job]:
    # One query per state, so a long history of done jobs never crowds out pending ones.
    jobs: list[Job] = []
    for state in UNFINISHED:
        jobs.extend(await store.list_jobs(session_id=session_id, state=state, limit=1000))
    return sorted(jobs, key=lambda job: job.id)


async def _view(store: Store, session_id: str) -> SessionView:
    session = await _require(store, session_id)
    return SessionView(
        session, await store.cursors(session_id), await _unfinished_jobs(store, session_id)
    )


# -- list ----------------------------------------------------------------------------------


@app.command("list")
def list_(
    store: StoreOption = None,
    state: Annotated[
        str | None, typer.Option(help="Only sessions in this state: active, ending, finalized.")
    ] = None,
    platform: Annotated[str | None, typer.Option(help="Only sessions of this platform.")] = None,
    user: Annotated[str | None, typer.Option(help="Only sessions of this user id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many sessions.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List sessions, newest first."""

    async def work() -> list[tuple[Session, list[Cursor]]]:
        wanted = None
        if state is not None:
            names = [s.value for s in SessionState]
            wanted = choice(state, SessionState, option="--state", names=names)
        async with opened_store(store) as opened:
            found = await opened.list_sessions(
                user_id=user, platform=platform, state=wanted, limit=limit
            )
            return [(session, await opened.cursors(session.id)) for session in found]

    rows = run_command(work)
    if as_json:
        print_json([session_json(session, cursors) for session, cursors in rows])
        return
    table = Table(title=f"{len(rows)} session(s), newest first", box=box.SIMPLE_HEAD)
    # The id never wraps (it is copied into other commands); dates wrap at their space.
    table.add_column("session", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("end reason", min_width=6)
    table.add_column("turns", justify="right")
    table.add_column("platform/user", min_width=10)
    table.add_column("last activity (UTC)", min_width=10)
    titled = any(session.title for session, _ in rows)
    if titled:
        table.add_column("title", overflow="ellipsis", no_wrap=True)
    for session, _ in rows:
        cells = [
            session.id,
            str(session.state),
            str(session.end_reason or ""),
            str(session.turn_count),
            f"{session.platform}/{session.user_id or '-'}",
            short_time(session.last_activity_at),
        ]
        table.add_row(*cells, *([session.title or ""] if titled else []))
    console.print(table)


# -- show ----------------------------------------------------------------------------------


@app.command()
def show(session_id: SessionId, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Show one session: state, end, lineage, turns, provider cursors and unfinished jobs."""

    async def work() -> SessionView:
        async with opened_store(store) as opened:
            return await _view(opened, session_id)

    view = run_command(work)
    if as_json:
        print_json(view.to_json())
        return
    _print_view(view)


def _print_view(view: SessionView) -> None:
    data = session_json(view.session, view.cursors)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    for key, value in data.items():
        if key != "providers" and value is not None:
            facts.add_row(key, str(value))
    console.print(facts, highlight=False)
    providers = Table(title="providers")
    for column in ("provider", "delivered", "committed", "epoch", "last commit", "last error"):
        providers.add_column(column, overflow="fold")
    for c in view.cursors:
        providers.add_row(
            c.provider,
            str(c.delivered_seq),
            str(c.committed_seq),
            str(c.commit_epoch),
            short_time(c.last_commit_at) or "never",
            c.last_error or "",
        )
    console.print(providers if view.cursors else "[dim]no provider has seen this session yet[/]")
    if not view.jobs:
        console.print("[dim]no pending jobs[/]")
        return
    jobs = Table(title="pending jobs")
    for column in ("job", "kind", "provider", "state", "attempts", "run after (UTC)"):
        jobs.add_column(column, no_wrap=True)
    jobs.add_column("last error", overflow="fold")
    for job in view.jobs:
        shown = job_json(job)
        jobs.add_row(
            str(job.id),
            job.kind,
            shown["provider"] or "",
            str(job.state),
            str(job.attempts),
            short_time(job.run_after),
            job.last_error or "",
        )
    console.print(jobs)


# -- export --------------------------------------------------------------------------------


def _markdown_header(session: Session) -> str:
    title = session.title or f"Session {session.id}"
    lines = [f"# {title}", "", f"- session: `{session.id}`", f"- key: `{session.key}`"]
    state = str(session.state)
    if session.end_reason is not None:
        state += f" (ended: {session.end_reason}, {iso(session.ended_at)})"
    lines.append(f"- state: {state}")
    if session.parent_id is not None:
        lines.append(f"- parent: `{session.parent_id}` ({session.lineage or 'child'})")
    user = session.user_name or session.user_id or "unknown"
    lines.append(f"- platform: {session.platform} {session.chat_type} `{session.chat_id}`")
    lines.append(f"- user: {user}")
    lines.append(f"- turns: {session.turn_count}")
    return "\n".join(lines) + "\n"


def _markdown_entry(entry: Entry) -> str:
    return f"\n## {entry.seq} · {entry.role} · {iso(entry.created_at)}\n\n{entry.text}\n"


def _jsonl_entry(entry: Entry) -> str:
    return json.dumps(entry_json(entry), ensure_ascii=False) + "\n"


async def _write_ledger(
    store: Store, session: Session, sink: TextIO, render: Callable[[Entry], str], *, show: bool
) -> int:
    """Write every entry of `session` to `sink`, page by page; how many were written."""
    written = 0
    with progress(show=show) as bar:
        task = bar.add_task(f"exporting {session.id}", total=session.turn_count)
        while True:
            page = await store.entries(session.id, after_seq=written, limit=EXPORT_PAGE)
            for entry in page:
                sink.write(render(entry))
            written += len(page)
            bar.update(task, completed=written)
            if len(page) < EXPORT_PAGE:
                return written


@app.command()
def export(
    session_id: SessionId,
    store: StoreOption = None,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="jsonl (one entry per line) or markdown.")
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of to stdout.")
    ] = None,
) -> None:
    """Export a session's ledger (every turn, in order) as JSON lines or Markdown."""

    async def work() -> int:
        fmt = choice(format_, _format, option="--format", names=EXPORT_FORMATS)
        async with opened_store(store) as opened:
            session = await _require(opened, session_id)
            render = _jsonl_entry if fmt == "jsonl" else _markdown_entry
            # The bar only where it cannot mix with the export itself.
            show = output is not None or not stdout_is_terminal()
            try:
                with _sink(output) as sink:
                    if fmt == "markdown":
                        sink.write(_markdown_header(session))
                    return await _write_ledger(opened, session, sink, render, show=show)
            except BrokenPipeError:
                # The reader went away (`… | head`): stop quietly, as Unix tools do.
                _detach_stdout()
                return 0
            except OSError as exc:
                raise ConfigError(f"cannot write the export: {exc.strerror or exc}") from None

    written = run_command(work)
    if output is not None:
        console.print(
            f"exported {written} entries of session {escape(session_id)} to {escape(str(output))}",
            highlight=False,
        )


def _format(value: str) -> str:
    if value not in EXPORT_FORMATS:
        raise ValueError(value)
    return value


@contextmanager
def _sink(path: Path | None) -> Iterator[TextIO]:
    """Where an export goes: the file named by --output, or stdout (left open)."""
    if path is None:
        # Looked up now, not at import: test runners and redirections replace it.
        yield sys.stdout
        return
    try:
        file = path.open("w", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the export to {path}: {exc.strerror}") from None
    with file:
        yield file


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # not a real file descriptor (a test runner's buffer): nothing to flush


# -- end -----------------------------------------------------------------------------------


def _engine(store: Store, settings: Settings, providers: list[str] | None) -> Engine:
    """An engine over `store` that commits ends to the configured providers (or `providers`).

    It needs no provider object: the end only enqueues the commits.
    """
    lifecycle = settings.lifecycle()
    if providers:
        for name in providers:
            check_identifier(name, what="--provider")
        lifecycle = replace(lifecycle, providers=tuple(dict.fromkeys(providers)))
    clock = SystemClock()
    return Engine(store, lifecycle, clock=clock, ids=IdGenerator(clock, system_random()))


@app.command()
def end(
    session_id: SessionId,
    store: StoreOption = None,
    reason: Annotated[
        str, typer.Option(help="Why it ends; an operator's end is always `admin`.")
    ] = "admin",
    provider: Annotated[
        list[str] | None,
        typer.Option(
            "--provider",
            "-p",
            help="Commit to this provider instead of the configured ones (repeatable).",
        ),
    ] = None,
    config: ConfigOption = None,
    detail: Annotated[str | None, typer.Option(help="A note kept with the end reason.")] = None,
    as_json: JsonOption = False,
) -> None:
    """End an active session through the one funnel, as an operator (reason admin)."""

    async def work() -> SessionView:
        chosen = choice(reason, _admin_reason, option="--reason", names=["admin"])
        settings = load_config(config, store=store)
        async with opened_store(settings.store) as opened:
            engine = _engine(opened, settings, provider)
            if not await engine.end_session(session_id, chosen, detail=detail):
                current = await _require(opened, session_id)
                ended = f", ended by {current.end_reason}" if current.end_reason else ""
                raise Conflict(
                    f"session {session_id} is {current.state}{ended}, not active: "
                    "only an active session can be ended"
                )
            return await _view(opened, session_id)

    view = run_command(work)
    if as_json:
        print_json(view.to_json())
        return
    kinds = ", ".join(f"{job.kind}#{job.id}" for job in view.jobs) or "none"
    console.print(
        f"session {escape(session_id)} ended ([bold]admin[/]): "
        f"state [bold]{view.session.state}[/]; "
        f"consumers enqueued: {kinds}",
        highlight=False,
    )
    if view.session.state is SessionState.ENDING:
        console.print("the gateway's workers run them; it is finalized when they all succeed")


def _admin_reason(value: str) -> EndReason:
    if value != EndReason.ADMIN:
        raise ValueError(value)
    return EndReason.ADMIN
