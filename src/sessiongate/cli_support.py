"""What the `sessiongate` commands share: the store option, running, JSON shapes, progress.

The JSON shapes built here (`session_json`, `job_json`, `dead_letter_json`,
`entry_json`) are a public interface, documented in `docs/cli.md`: keys are only
ever added, never renamed or removed. Times are ISO 8601 strings in UTC.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from sessiongate.config import Settings, load_settings
from sessiongate.errors import ConfigError, SessionGateError, StoreUnavailable
from sessiongate.models import Cursor, DeadLetter, Entry, Job, Session
from sessiongate.store import Store, default_store_url, open_store, parse_store_url

T = TypeVar("T")
E = TypeVar("E")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="SESSIONGATE_STORE",
        help="Store URL: sqlite:///path/to/file.db or postgresql://… "
        "(default: SQLite in the user's data directory).",
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

# Errors and progress go to stderr, so that stdout stays clean for JSON and exports.
err_console = Console(stderr=True)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="SESSIONGATE_CONFIG",
        help="The YAML config file (default: the user's config dir, else embedded defaults).",
    ),
]


def run_command(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's coroutine; a sessiongate error becomes one clear line and exit code 1.

    An error inside a running gateway's task group (a platform refusing its token)
    arrives as an exception group: each of its sessiongate errors is shown the same way.
    """
    try:
        return asyncio.run(work())
    except SessionGateError as exc:
        fail(str(exc))
    except BaseExceptionGroup as group:
        matched, rest = group.split(SessionGateError)
        if matched is None or rest is not None:
            raise
        fail("; ".join(str(exc) for exc in matched.exceptions))


def load_config(config: Path | None, *, store: str | None = None) -> Settings:
    """The settings a command runs with (`--store` overrides the file); errors exit 1."""
    try:
        settings = load_settings(config)
    except SessionGateError as exc:
        fail(str(exc))
    return settings if store is None else settings.model_copy(update={"store": store})


def fail(message: str) -> NoReturn:
    """Print `message` as one error line on stderr and exit with code 1."""
    # Soft wrap and no markup: the message stays one line, and text from the store
    # (ids, errors) is never read as Rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(1)


@asynccontextmanager
async def opened_store(url: str | None) -> AsyncIterator[Store]:
    """Open an existing, migrated store for an operator command, and close it after.

    Unlike `migrate`, an operator command never creates a store: a mistyped SQLite
    path would otherwise leave an empty database behind and show nothing.
    """
    chosen = url or default_store_url()
    parsed = parse_store_url(chosen)
    if parsed.path is not None and not parsed.path.is_file():
        raise StoreUnavailable(
            f"there is no SQLite store at {parsed.path}; check --store, or create one "
            "with `sessiongate migrate --store URL`"
        )
    store = await open_store(chosen, migrate=False)
    try:
        yield store
    finally:
        await store.close()


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 (UTC, as the store returns it), or None."""
    return None if value is None else value.isoformat()


def short_time(value: datetime | None) -> str:
    """A time for a table cell: to the second, in UTC; empty when there is none."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def cursor_json(cursor: Cursor) -> dict[str, Any]:
    """One provider's progress with a session, keyed by provider name in `providers`."""
    return {
        "delivered_seq": cursor.delivered_seq,
        "committed_seq": cursor.committed_seq,
        "commit_epoch": cursor.commit_epoch,
        "last_commit_at": iso(cursor.last_commit_at),
        "last_error": cursor.last_error,
        "updated_at": iso(cursor.updated_at),
    }


def session_json(session: Session, cursors: Iterable[Cursor]) -> dict[str, Any]:
    """The public JSON shape of a session, with its per-provider cursors."""
    return {
        "session_id": session.id,
        "session_key": session.key,
        "state": str(session.state),
        "end_reason": None if session.end_reason is None else str(session.end_reason),
        "end_detail": session.end_detail,
        "ended_at": iso(session.ended_at),
        "parent_session_id": session.parent_id,
        "lineage": None if session.lineage is None else str(session.lineage),
        "title": session.title,
        "platform": session.platform,
        "chat_type": str(session.chat_type),
        "chat_id": session.chat_id,
        "thread_id": session.thread_id,
        "user_id": session.user_id,
        "user_name": session.user_name,
        "turn_count": session.turn_count,
        "token_estimate": session.token_estimate,
        "epoch": session.epoch,
        "created_at": iso(session.created_at),
        "last_activity_at": iso(session.last_activity_at),
        "providers": {cursor.provider: cursor_json(cursor) for cursor in cursors},
    }


def _provider_of(payload: Mapping[str, Any]) -> str | None:
    provider = payload.get("provider")
    return provider if isinstance(provider, str) else None


def job_json(job: Job) -> dict[str, Any]:
    """The public JSON shape of an outbox job."""
    return {
        "job_id": job.id,
        "kind": job.kind,
        "state": str(job.state),
        "provider": _provider_of(job.payload),
        "session_id": job.session_id,
        "idempotency_key": job.idempotency_key,
        "ordering_key": job.ordering_key,
        "gates_finalize": job.gates_finalize,
        "attempts": job.attempts,
        "run_after": iso(job.run_after),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "lease_owner": job.lease_owner,
        "lease_expires_at": iso(job.lease_expires_at),
        "last_error": job.last_error,
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """The public JSON shape of a dead letter."""
    return {
        "job_id": letter.job_id,
        "kind": letter.kind,
        "provider": _provider_of(letter.payload),
        "session_id": letter.session_id,
        "idempotency_key": letter.idempotency_key,
        "attempts": letter.attempts,
        "last_error": letter.last_error,
        "died_at": iso(letter.died_at),
        "payload": dict(letter.payload),
    }


def entry_json(entry: Entry) -> dict[str, Any]:
    """The public JSON shape of a ledger entry (one line of a JSONL export)."""
    return {
        "session_id": entry.session_id,
        "seq": entry.seq,
        "role": str(entry.role),
        "text": entry.text,
        "created_at": iso(entry.created_at),
        "token_estimate": entry.token_estimate,
        "platform_message_id": entry.platform_message_id,
        "parts": list(entry.parts),
        "meta": dict(entry.meta),
    }


def choice(value: str, allowed: Callable[[str], E], *, option: str, names: Iterable[str]) -> E:
    """Parse an option's value (e.g. into an enum); `ConfigError` naming the choices."""
    try:
        return allowed(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r} is not one of: {', '.join(names)}") from None


def progress(*, show: bool | None = None) -> Progress:
    """A progress bar on stderr, shown only on a terminal (quiet when piped or captured).

    `show=False` hides it even on a terminal (e.g. when the output itself goes there).
    """
    visible = err_console.is_terminal if show is None else show and err_console.is_terminal
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not visible,
    )


def stdout_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (not a pipe, a file or a test runner)."""
    return sys.stdout.isatty()
