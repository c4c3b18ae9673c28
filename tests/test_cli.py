"""The command line as a user runs it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sessiongate import __version__
from sessiongate.cli import app
from sessiongate.store.migrations import latest_version

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"sessiongate {__version__}"


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'sg.db'}"
    first = runner.invoke(app, ["migrate", "--store", url])
    second = runner.invoke(app, ["migrate", "--store", url])
    assert first.exit_code == second.exit_code == 0, first.output
    assert f"schema version {latest_version('sqlite')}" in first.stdout
    assert first.stdout == second.stdout
    with sqlite3.connect(tmp_path / "a" / "sg.db") as conn:
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert applied == (latest_version("sqlite"),)


def test_migrate_refuses_a_database_newer_than_the_code(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sg.db'}"
    assert runner.invoke(app, ["migrate", "--store", url]).exit_code == 0
    with sqlite3.connect(tmp_path / "sg.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    result = runner.invoke(app, ["migrate", "--store", url])
    assert result.exit_code == 1
    assert "newer" in result.stderr
    assert "99" in result.stderr
    assert "Traceback" not in result.output


def test_an_unknown_store_scheme_is_a_clear_error() -> None:
    result = runner.invoke(app, ["migrate", "--store", "mysql://localhost/db"])
    assert result.exit_code == 1
    assert "unknown scheme 'mysql'" in result.stderr
    assert "sqlite://" in result.stderr
    assert "postgresql://" in result.stderr


def test_smoke_ends_a_session_through_the_funnel(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks" / "recorder"
    hooks.mkdir(parents=True)
    (hooks / "HOOK.yaml").write_text('name: recorder\nevents: ["session:*"]\n')
    log = tmp_path / "events.log"
    (hooks / "handler.py").write_text(
        "def handle(event_type, context):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(event_type + ' ' + context['session_id'] + '\\n')\n"
    )
    url = f"sqlite:///{tmp_path / 'sg.db'}"
    result = runner.invoke(app, ["smoke", "--store", url, "--hooks-dir", str(tmp_path / "hooks")])
    assert result.exit_code == 0, result.output
    assert "state finalized" in result.stdout
    # The ended conversation went to the built-in local memory and comes back.
    assert "recalled from local" in result.stdout
    assert "coffee black" in result.stdout
    events = log.read_text().split("\n")
    kinds = sorted(line.split()[0] for line in events if line)
    # The ended session's start/end pair, its reset, and the new session's start.
    assert kinds == ["session:end", "session:reset", "session:start", "session:start"]


def test_an_error_inside_the_running_gateway_is_reported_cleanly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import typer

    from sessiongate.cli_support import run_command
    from sessiongate.errors import ConfigError

    async def failing() -> None:
        async def refused() -> None:
            raise ConfigError("the bot token in TELEGRAM_BOT_TOKEN was refused")

        async with asyncio.TaskGroup() as group:
            group.create_task(refused())

    with pytest.raises(typer.Exit) as caught:
        run_command(failing)
    assert caught.value.exit_code == 1
    err = capsys.readouterr().err
    assert "TELEGRAM_BOT_TOKEN was refused" in err
    assert "Traceback" not in err
