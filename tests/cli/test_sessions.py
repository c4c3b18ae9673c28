"""`sessiongate sessions …` against SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from sessiongate import cli_sessions, cli_support
from sessiongate.cli import app
from sessiongate.models import JobState, SessionState
from sessiongate.store import Store

from .seeding import ALICE_TURNS, BOB_TURNS, Seeded, json_of, one_line_error, runner

SESSION_KEYS = {
    "session_id",
    "session_key",
    "state",
    "end_reason",
    "parent_session_id",
    "title",
    "turn_count",
    "created_at",
    "last_activity_at",
    "providers",
}
PROVIDER_KEYS = {"delivered_seq", "committed_seq", "last_commit_at", "last_error"}


# -- list ----------------------------------------------------------------------------------


def test_list_json_has_the_documented_shape(seeded: Seeded) -> None:
    sessions = json_of(seeded, "sessions", "list")
    # Newest first.
    assert [s["session_id"] for s in sessions] == [
        seeded.bob_id,
        seeded.alice_id,
        seeded.finalized_id,
    ]
    for session in sessions:
        assert set(session) >= SESSION_KEYS
    done = sessions[2]
    assert (done["state"], done["end_reason"], done["turn_count"]) == ("finalized", "new", 3)
    assert done["session_key"] == "agent:main:terminal:dm:alice"
    assert set(done["providers"]["local"]) >= PROVIDER_KEYS
    assert done["providers"]["local"]["delivered_seq"] == 3
    assert done["providers"]["local"]["committed_seq"] == 3
    assert done["providers"]["local"]["last_commit_at"] is not None
    assert sessions[0]["providers"] == {}


def test_list_filters(seeded: Seeded) -> None:
    def ids(*args: str) -> list[str]:
        return [s["session_id"] for s in json_of(seeded, "sessions", "list", *args)]

    assert ids("--state", "finalized") == [seeded.finalized_id]
    assert ids("--state", "active") == [seeded.bob_id, seeded.alice_id]
    assert ids("--platform", "terminal") == [seeded.alice_id, seeded.finalized_id]
    assert ids("--user", "bob") == [seeded.bob_id]
    assert ids("--user", "alice", "--limit", "1") == [seeded.alice_id]
    assert ids("--user", "nobody") == []


def test_list_table(seeded: Seeded) -> None:
    result = seeded.invoke("sessions", "list")
    assert result.exit_code == 0, result.output
    for session_id in (seeded.bob_id, seeded.alice_id, seeded.finalized_id):
        assert session_id in result.stdout
    assert "finalized" in result.stdout


def test_list_refuses_an_unknown_state(seeded: Seeded) -> None:
    result = seeded.invoke("sessions", "list", "--state", "dormant")
    one_line_error(result, "--state 'dormant'", "active, ending, finalized")


# -- show ----------------------------------------------------------------------------------


def test_showjson_of(seeded: Seeded) -> None:
    shown = json_of(seeded, "sessions", "show", seeded.finalized_id)
    assert set(shown) >= SESSION_KEYS | {"pending_jobs"}
    assert (shown["session_id"], shown["state"]) == (seeded.finalized_id, "finalized")
    assert shown["pending_jobs"] == []
    assert shown["providers"]["local"]["committed_seq"] == 3
    active = json_of(seeded, "sessions", "show", seeded.bob_id)
    assert (active["state"], active["end_reason"], active["turn_count"]) == ("active", None, 2)
    # Bob's session:start event has not run: no worker drained the store since.
    assert [j["kind"] for j in active["pending_jobs"]] == ["hook.event"]
    assert active["pending_jobs"][0]["state"] == "pending"


def test_show_table(seeded: Seeded) -> None:
    result = seeded.invoke("sessions", "show", seeded.finalized_id)
    assert result.exit_code == 0, result.output
    assert seeded.finalized_id in result.stdout
    assert "local" in result.stdout
    assert "no pending jobs" in result.stdout


def test_show_an_unknown_session_is_a_clear_error(seeded: Seeded) -> None:
    result = seeded.invoke("sessions", "show", "no-such-session")
    one_line_error(result, "no session with id 'no-such-session'")


# -- export --------------------------------------------------------------------------------


def test_export_jsonl_is_the_ledger_in_order(seeded: Seeded) -> None:
    result = seeded.invoke("sessions", "export", seeded.finalized_id, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["seq"], e["role"], e["text"]) for e in lines] == [
        (n, str(role), text) for n, (role, text) in enumerate(ALICE_TURNS, start=1)
    ]
    assert {e["session_id"] for e in lines} == {seeded.finalized_id}
    assert all(e["created_at"] for e in lines)


def test_export_markdown_has_the_turns_in_order(seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "bob.md"
    result = seeded.invoke(
        "sessions", "export", seeded.bob_id, "--format", "markdown", "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    assert f"exported 2 entries of session {seeded.bob_id}" in result.stdout
    text = out.read_text()
    assert text.startswith(f"# Session {seeded.bob_id}\n")
    positions = [text.index(turn) for _, turn in BOB_TURNS]
    assert positions == sorted(positions)
    assert "## 1 · user ·" in text
    assert "## 2 · assistant ·" in text


def test_export_pages_through_a_long_ledger(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_sessions, "EXPORT_PAGE", 2)
    result = seeded.invoke("sessions", "export", seeded.finalized_id)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2, 3]


def test_export_errors(seeded: Seeded, tmp_path: Path) -> None:
    bad = seeded.invoke("sessions", "export", seeded.bob_id, "--format", "pdf")
    one_line_error(bad, "--format 'pdf'", "jsonl, markdown")
    unknown = seeded.invoke("sessions", "export", "nope")
    one_line_error(unknown, "no session with id 'nope'")
    unwritable = seeded.invoke(
        "sessions", "export", seeded.bob_id, "--output", str(tmp_path / "no" / "dir" / "x.jsonl")
    )
    one_line_error(unwritable, "cannot write the export")


# -- end -----------------------------------------------------------------------------------


def test_end_goes_through_the_funnel(seeded: Seeded) -> None:
    result = seeded.invoke(
        "sessions", "end", seeded.bob_id, "--reason", "admin", "-p", "local", "-p", "archive-2"
    )
    assert result.exit_code == 0, result.output
    assert "ended (admin)" in result.stdout

    async def check(store: Store) -> None:
        session = await store.get_session(seeded.bob_id)
        assert session is not None
        assert session.state in (SessionState.ENDING, SessionState.FINALIZED)
        assert str(session.end_reason) == "admin"
        # The key routes nowhere now: Bob's next message opens a new session.
        assert await store.routed_session(session.key) is None
        jobs = await store.list_jobs(session_id=seeded.bob_id, state=JobState.PENDING)
        commits = sorted(j.payload["provider"] for j in jobs if j.kind == "memory.commit")
        assert commits == ["archive-2", "local"]
        # Every consumer of the end gates its finalization; only the session's own
        # `session:start` event (enqueued when it opened, never run) does not.
        gating = {j.kind for j in jobs if j.gates_finalize}
        assert gating == {"memory.commit", "hook.event", "hook.finalize"}
        assert [j.kind for j in jobs if not j.gates_finalize] == ["hook.event"]

    seeded.with_store(check)
    shown = json_of(seeded, "sessions", "show", seeded.bob_id)
    assert (shown["state"], shown["end_reason"]) == ("ending", "admin")
    assert {j["provider"] for j in shown["pending_jobs"] if j["kind"] == "memory.commit"} == {
        "local",
        "archive-2",
    }


def test_end_json_and_the_default_provider(seeded: Seeded) -> None:
    ended = json_of(seeded, "sessions", "end", seeded.alice_id)
    assert (ended["state"], ended["end_reason"]) == ("ending", "admin")
    commits = [j for j in ended["pending_jobs"] if j["kind"] == "memory.commit"]
    assert [(j["provider"], j["gates_finalize"]) for j in commits] == [("local", True)]


def test_end_refuses_a_session_that_is_not_active(seeded: Seeded) -> None:
    result = seeded.invoke("sessions", "end", seeded.finalized_id)
    one_line_error(result, "is finalized, ended by new, not active")
    unknown = seeded.invoke("sessions", "end", "nope")
    one_line_error(unknown, "no session with id 'nope'")
    other = seeded.invoke("sessions", "end", seeded.bob_id, "--reason", "new")
    one_line_error(other, "--reason 'new'", "admin")
    assert json_of(seeded, "sessions", "show", seeded.bob_id)["state"] == "active"


# -- the store option ----------------------------------------------------------------------


def test_a_bad_store_url_is_a_clear_error() -> None:
    result = runner.invoke(app, ["sessions", "list", "--store", "mysql://h/db"])
    one_line_error(result, "unknown scheme 'mysql'")


def test_a_missing_sqlite_store_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = runner.invoke(app, ["sessions", "show", "x", "--store", f"sqlite://{path}"])
    one_line_error(result, f"there is no SQLite store at {path}")
    assert not path.exists()


def test_an_unmigrated_postgres_store_is_a_clear_error(pg_dsn: str) -> None:
    result = runner.invoke(app, ["outbox", "status", "--store", pg_dsn])
    one_line_error(result, "sessiongate migrate")


# -- progress ------------------------------------------------------------------------------


def test_export_is_quiet_when_piped(seeded: Seeded) -> None:
    result = seeded.invoke("sessions", "export", seeded.finalized_id)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_export_shows_progress_on_a_terminal(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=80)
    monkeypatch.setattr(cli_support, "err_console", terminal)
    out = tmp_path / "ledger.jsonl"
    result = seeded.invoke("sessions", "export", seeded.finalized_id, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"exporting {seeded.finalized_id}" in screen.getvalue()
    assert len(out.read_text().splitlines()) == 3


def test_end_commits_to_the_configured_providers(seeded: Seeded, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("memory: {providers: {local: {}, archive-2: {kind: local}}}\n")
    ended = json_of(seeded, "sessions", "end", seeded.alice_id, "--config", str(config))
    commits = sorted(j["provider"] for j in ended["pending_jobs"] if j["kind"] == "memory.commit")
    assert commits == ["archive-2", "local"]
