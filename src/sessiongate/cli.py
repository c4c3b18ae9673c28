"""The `sessiongate` command line."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sessiongate import __version__
from sessiongate.cli_config import config_app
from sessiongate.cli_ops import doctor, providers_app
from sessiongate.cli_outbox import app as outbox_app
from sessiongate.cli_prune import prune
from sessiongate.cli_sessions import app as sessions_app
from sessiongate.cli_support import ConfigOption, StoreOption, load_config, run_command
from sessiongate.gateway.process import GatewayProcess
from sessiongate.logs import configure_logging
from sessiongate.platforms.terminal import read_stdin, repl, terminal_source
from sessiongate.smoke import SmokeReport, run_smoke
from sessiongate.store import default_store_url, open_store, parse_store_url

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="sessiongate: a chat-agent gateway whose sessions always end well.",
)
app.add_typer(config_app, name="config")
app.add_typer(providers_app, name="providers")
app.add_typer(sessions_app, name="sessions")
app.add_typer(outbox_app, name="outbox")
app.command("doctor")(doctor)
app.command("prune")(prune)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sessiongate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """sessiongate: a chat-agent gateway whose sessions always end well."""


@app.command()
def migrate(store: StoreOption = None) -> None:
    """Apply pending schema migrations to the store (safe to run again)."""
    url = store or default_store_url()

    async def work() -> str:
        parsed = parse_store_url(url)
        opened = await open_store(url, migrate=True)
        try:
            version = await opened.schema_version()
        finally:
            await opened.close()
        return f"store {parsed.redacted()} is at schema version {version}"

    console.print(run_command(work))


@app.command()
def smoke(
    store: StoreOption = None,
    hooks_dir: Annotated[
        Path | None,
        typer.Option("--hooks-dir", help="Directory hooks to deliver the events to."),
    ] = None,
    user: Annotated[str, typer.Option(help="The user id of the smoke conversation.")] = "smoke",
) -> None:
    """Run a short conversation through the lifecycle and show how it ended."""
    url = store or default_store_url()

    async def work() -> SmokeReport:
        opened = await open_store(url, migrate=True)
        try:
            return await run_smoke(opened, hooks_dir=hooks_dir, user=user)
        finally:
            await opened.close()

    report = run_command(work)
    for problem in report.hook_problems:
        err_console.print(f"[yellow]hook skipped:[/] {problem}")
    table = Table(title=f"session {report.ended.id} ({report.ended.turn_count} turns)")
    for column in ("consumer", "kind", "state", "attempts"):
        table.add_column(column)
    for job in report.consumers:
        table.add_row(job.idempotency_key, job.kind, str(job.state), str(job.attempts))
    console.print(table)
    console.print(
        f"ended with [bold]{report.ended.end_reason}[/]: state [bold]{report.ended.state}[/]; "
        f"the conversation continues in {report.current.id}"
    )
    for hit in report.recalled:
        console.print(f"recalled from {hit.provider} (session {hit.session_id}): {hit.text!r}")
    if not report.recalled:
        console.print("[yellow]nothing was recalled from memory[/]")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def run(config: ConfigOption = None, store: StoreOption = None) -> None:
    """Run the gateway: web chat page, HTTP APIs, platforms, workers and timers."""
    settings = load_config(config, store=store)
    configure_logging(settings.log.format, settings.log.level)

    async def work() -> None:
        process = await GatewayProcess.open(settings)
        for problem in process.hook_problems:
            err_console.print(f"[yellow]hook skipped:[/] {problem}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        started = asyncio.Event()
        serving = asyncio.create_task(process.serve(stop, started=started))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if started.is_set():
            host = settings.server.host
            console.print(
                f"sessiongate is serving on [bold]http://{host}:{process.port}/[/] "
                f"(agent: {process.agent.name}; memory: {', '.join(settings.memory.providers)}; "
                f"store: {parse_store_url(settings.store or default_store_url()).redacted()})"
            )
            console.print("press Ctrl-C to stop; live sessions stay live across a restart")
        waiter.cancel()
        await serving

    run_command(work)


def _plain(text: str) -> None:
    # Agent text is shown as it is: never read as Rich markup.
    console.print(text, markup=False, highlight=False)


@app.command()
def chat(
    config: ConfigOption = None,
    store: StoreOption = None,
    user: Annotated[str | None, typer.Option(help="Talk as this user (default: you).")] = None,
) -> None:
    """Talk to the agent in the terminal, against the configured store (no server needed)."""
    settings = load_config(config, store=store)

    async def work() -> int:
        process = await GatewayProcess.open(settings)
        stop = asyncio.Event()
        background = asyncio.create_task(process.lifecycle.run(stop))
        try:
            return await repl(process.gateway, terminal_source(user), read=read_stdin, write=_plain)
        finally:
            await process.gateway.drain(settings.gateway.drain_seconds)
            stop.set()
            await background
            await process.close()

    run_command(work)


def main() -> None:
    """The console script's entry point."""
    app()
