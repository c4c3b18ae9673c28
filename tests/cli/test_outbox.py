"""`sessiongate outbox …` against SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from sessiongate import cli_outbox
from sessiongate.models import JobState, SessionState
from sessiongate.store import Store

from .seeding import Seeded, json_of, kill_jobs, lifecycle_for, one_line_error

STATUS_KEYS = {"pending", "running", "dead", "done", "oldest_pending_age_s", "by_kind"}
LETTER_KEYS = {"job_id", "kind", "provider", "session_id", "attempts", "last_error", "died_at"}


def _end_bob(seeded: Seeded) -> None:
    assert seeded.invoke("sessions", "end", seeded.bob_id).exit_code == 0


def _kill(seeded: Seeded, kind: str, error: str = "boom") -> list[int]:
    async def work(store: Store) -> list[int]:
        return await kill_jobs(store, kind, seeded.bob_id, error)

    return seeded.with_store(work)


def _job_state(seeded: Seeded, job_id: int) -> tuple[JobState, int] | None:
    async def work(store: Store) -> tuple[JobState, int] | None:
        job = await store.get_job(job_id)
        return None if job is None else (job.state, job.attempts)

    return seeded.with_store(work)


# -- status --------------------------------------------------------------------------------


def test_statusjson_of(seeded: Seeded) -> None:
    status = json_of(seeded, "outbox", "status")
    assert set(status) >= STATUS_KEYS
    # Bob's session:start event is the one job nobody ran yet.
    assert (status["pending"], status["running"], status["dead"]) == (1, 0, 0)
    assert status["done"] > 0
    assert status["by_kind"]["hook.event"]["pending"] == 1
    assert set(status["by_kind"]["memory.commit"]) == {"pending", "running", "done", "dead"}
    assert status["oldest_pending_age_s"] >= 0
    _end_bob(seeded)
    _kill(seeded, "memory.commit")
    after = json_of(seeded, "outbox", "status")
    assert (after["pending"], after["dead"]) == (3, 1)
    assert after["by_kind"]["memory.commit"]["dead"] == 1


def test_status_table(seeded: Seeded) -> None:
    _end_bob(seeded)
    _kill(seeded, "memory.commit")
    result = seeded.invoke("outbox", "status")
    assert result.exit_code == 0, result.output
    assert "memory.commit" in result.stdout
    assert "1 dead job(s)" in result.stdout


def test_status_of_an_empty_outbox(store_url: str) -> None:
    status = json_of(Seeded(store_url, "", "", ""), "outbox", "status")
    assert (status["pending"], status["oldest_pending_age_s"], status["by_kind"]) == (0, None, {})


# -- dead ----------------------------------------------------------------------------------


def test_dead_lists_the_dead_letters(seeded: Seeded) -> None:
    assert json_of(seeded, "outbox", "dead") == []
    assert "no dead jobs" in seeded.invoke("outbox", "dead").stdout
    _end_bob(seeded)
    [job_id] = _kill(seeded, "memory.commit", error="provider down")
    [letter] = json_of(seeded, "outbox", "dead")
    assert set(letter) >= LETTER_KEYS
    assert (letter["job_id"], letter["kind"], letter["provider"]) == (
        job_id,
        "memory.commit",
        "local",
    )
    assert (letter["session_id"], letter["attempts"]) == (seeded.bob_id, 1)
    assert letter["last_error"] == "provider down"
    shown = seeded.invoke("outbox", "dead")
    assert "  provider down\n" in shown.stdout
    assert f"job {job_id}  memory.commit → local  session {seeded.bob_id}" in shown.stdout


# -- redrive -------------------------------------------------------------------------------


def test_redrive_moves_a_dead_job_back_to_pending(seeded: Seeded) -> None:
    _end_bob(seeded)
    [job_id] = _kill(seeded, "memory.commit")
    assert json_of(seeded, "sessions", "show", seeded.bob_id)["state"] == "ending"
    result = seeded.invoke("outbox", "redrive", str(job_id))
    assert result.exit_code == 0, result.output
    assert "redrove 1 job(s)" in result.stdout
    assert result.stderr == ""  # no progress bar when not on a terminal
    assert _job_state(seeded, job_id) == (JobState.PENDING, 0)
    assert json_of(seeded, "outbox", "dead") == []

    # The workers run it now, and the session finalizes: nothing was skipped.
    async def drain(store: Store) -> SessionState:
        await lifecycle_for(store).drain()
        session = await store.get_session(seeded.bob_id)
        assert session is not None
        return session.state

    assert seeded.with_store(drain) is SessionState.FINALIZED


def test_redrive_all_in_batches(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_outbox, "REDRIVE_BATCH", 1)
    started = _kill(seeded, "hook.event")
    _end_bob(seeded)
    commit = _kill(seeded, "memory.commit")
    assert len(json_of(seeded, "outbox", "dead")) == 2
    result = seeded.invoke("outbox", "redrive", "--all")
    assert result.exit_code == 0, result.output
    assert "redrove 2 job(s)" in result.stdout
    for job_id in started + commit:
        assert _job_state(seeded, job_id) == (JobState.PENDING, 0)
    assert "redrove 0 job(s)" in seeded.invoke("outbox", "redrive", "--all").stdout


def test_redrive_checks_every_id_first(seeded: Seeded) -> None:
    [dead] = _kill(seeded, "hook.event")
    unknown = seeded.invoke("outbox", "redrive", str(dead), "424242")
    one_line_error(unknown, "no job with id 424242", "nothing was redriven")
    assert _job_state(seeded, dead) == (JobState.DEAD, 1)
    _end_bob(seeded)
    pending = json_of(seeded, "sessions", "show", seeded.bob_id)["pending_jobs"][-1]["job_id"]
    result = seeded.invoke("outbox", "redrive", str(dead), str(pending))
    assert result.exit_code == 0, result.output
    assert f"job {pending} is not dead" in result.stdout
    assert "redrove 1 job(s)" in result.stdout


def test_redrive_needs_ids_or_all(seeded: Seeded) -> None:
    one_line_error(seeded.invoke("outbox", "redrive"), "--all")
    one_line_error(seeded.invoke("outbox", "redrive", "1", "--all"), "not both")


# -- drop ----------------------------------------------------------------------------------


def test_drop_discards_a_dead_job_that_gates_nothing(seeded: Seeded) -> None:
    [start_event] = _kill(seeded, "hook.event")
    declined = seeded.invoke("outbox", "drop", str(start_event), input="n\n")
    assert declined.exit_code == 1
    assert _job_state(seeded, start_event) == (JobState.DEAD, 1)
    result = seeded.invoke("outbox", "drop", str(start_event), "--yes")
    assert result.exit_code == 0, result.output
    assert f"dropped job {start_event} (hook.event, session {seeded.bob_id})" in result.stdout
    assert _job_state(seeded, start_event) is None
    assert json_of(seeded, "outbox", "dead") == []
    one_line_error(seeded.invoke("outbox", "drop", str(start_event), "--yes"), "no job with id")


def test_drop_refuses_a_gating_or_live_job(seeded: Seeded) -> None:
    _end_bob(seeded)
    [commit] = _kill(seeded, "memory.commit")
    gating = seeded.invoke("outbox", "drop", str(commit), "--yes")
    one_line_error(gating, f"job {commit} gates the finalization", "redrive")
    assert _job_state(seeded, commit) == (JobState.DEAD, 1)
    pending = json_of(seeded, "sessions", "show", seeded.bob_id)["pending_jobs"][-1]["job_id"]
    live = seeded.invoke("outbox", "drop", str(pending), "--yes")
    one_line_error(live, "is pending, not dead")
