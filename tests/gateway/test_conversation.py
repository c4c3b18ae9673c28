"""A conversation through the gateway: write-ahead, memory, events, commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.conftest import ALICE, BOB, say, settings_for
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import EndReason, Lineage, Role, SessionState
from sessiongate.testing import FakeClock


async def settle(process: GatewayProcess) -> None:
    """Run every due outbox job (the workers' work) until none is left."""
    await process.lifecycle.drain()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_conversation_is_written_ahead_and_recalled_after_new(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/sg.db" if kind == "sqlite" else request.getfixturevalue("pg_dsn")
    process = await GatewayProcess.open(settings_for(url, tmp_path))
    try:
        gateway = process.gateway
        first = await say(gateway, "My cat is called Miso and she likes tuna")
        assert first.session is not None
        assert not first.notice
        assert "offline agent" in first.text
        stored_session = await process.store.get_session(first.session.id)
        assert first.session == stored_session
        entries = await process.store.entries(first.session.id)
        assert [(e.role, e.text) for e in entries] == [
            (Role.USER, "My cat is called Miso and she likes tuna"),
            (Role.ASSISTANT, first.text),
        ]
        jobs = await process.store.list_jobs(session_id=first.session.id)
        types = [job.payload.get("event_type") for job in jobs if job.kind == "hook.event"]
        assert "agent:start" in types
        assert "agent:end" in types

        fresh = await say(gateway, "/new")
        assert fresh.command == "new"
        assert fresh.session is not None
        assert fresh.session.id != first.session.id
        await settle(process)
        ended = await process.store.get_session(first.session.id)
        assert ended is not None
        assert ended.state is SessionState.FINALIZED
        assert ended.end_reason is EndReason.NEW

        answer = await say(gateway, "what is my cat called?")
        assert answer.session is not None
        assert answer.session.id == fresh.session.id
        assert any("Miso" in hit.text for hit in answer.recalled)
        assert "Miso" in answer.text
        # Never another user's memory.
        other = await say(gateway, "what is my cat called?", BOB)
        assert not any("Miso" in hit.text for hit in other.recalled)
        # The recalled memory goes to the agent, never into the stored user message.
        stored = await process.store.entries(answer.session.id)
        assert stored[0].text == "what is my cat called?"
    finally:
        await process.close()


async def test_titles_sessions_and_resume(process: GatewayProcess) -> None:
    gateway = process.gateway
    first = await say(gateway, "planning the garden")
    assert first.session is not None
    titled = await say(gateway, "/title Garden")
    assert titled.session is not None
    assert titled.session.title == "Garden"
    await say(gateway, "/new Kitchen")
    await say(gateway, "new tiles for the kitchen")
    listing = await say(gateway, "/sessions")
    assert "Garden" in listing.text
    assert "Kitchen" in listing.text
    resumed = await say(gateway, "/resume garden")
    assert resumed.session is not None
    assert resumed.session.id == first.session.id
    assert resumed.session.state is SessionState.ACTIVE
    again = await say(gateway, "and the roses?")
    assert again.session is not None
    assert again.session.id == first.session.id
    status = await say(gateway, "/status")
    assert first.session.id in status.text
    assert "memory local:" in status.text
    nothing = await say(gateway, "/resume no-such-title")
    assert nothing.notice
    assert "no session" in nothing.text


async def test_another_users_session_cannot_be_resumed(process: GatewayProcess) -> None:
    theirs = await say(process.gateway, "bob's secret plans", BOB)
    assert theirs.session is not None
    refused = await say(process.gateway, f"/resume {theirs.session.id}")
    assert refused.notice
    session, _ = await process.gateway.conversation(BOB)
    assert session is not None
    assert session.id == theirs.session.id


async def test_undo_takes_back_the_last_exchange(process: GatewayProcess) -> None:
    gateway = process.gateway
    await say(gateway, "keep this")
    await say(gateway, "take this back")
    undone = await say(gateway, "/undo")
    assert undone.command == "undo"
    _, shown = await gateway.conversation(ALICE)
    assert [e.text for e in shown if e.role is Role.USER] == ["keep this"]
    # The ledger itself stays append-only: the undone turn is still there, marked.
    assert undone.session is not None
    assert len(await process.store.entries(undone.session.id)) == 5


async def test_branch_and_compress_rotate_to_children(process: GatewayProcess) -> None:
    gateway = process.gateway
    parent = await say(gateway, "the first idea")
    assert parent.session is not None
    branched = await say(gateway, "/branch Variant")
    assert branched.session is not None
    assert branched.session.parent_id == parent.session.id
    assert branched.session.lineage is Lineage.BRANCH
    await say(gateway, "more on the variant")
    compressed = await say(gateway, "/compress")
    assert compressed.session is not None
    assert compressed.session.parent_id == branched.session.id
    child = await process.store.entries(compressed.session.id)
    assert child[0].role is Role.SYSTEM
    assert "more on the variant" in child[0].text


@pytest.mark.parametrize(
    "text",
    ["", "   ", "nul\x00byte", "lone \ud800 surrogate", "x" * (1024 * 1024 + 1)],
    ids=["empty", "blank", "nul", "surrogate", "oversize"],
)
async def test_bad_messages_get_a_notice_and_store_nothing(
    process: GatewayProcess, text: str
) -> None:
    out = await say(process.gateway, text)
    assert out.notice
    assert out.session is None
    assert out.text.startswith("Not accepted:")
    assert await process.store.list_sessions() == []


async def test_an_unknown_command_is_answered_and_not_stored(process: GatewayProcess) -> None:
    out = await say(process.gateway, "/frobnicate now")
    assert out.notice
    assert "Unknown command /frobnicate" in out.text
    assert "/new" in out.text
    assert await process.store.list_sessions() == []


async def test_a_decision_hook_can_deny_a_command(process: GatewayProcess) -> None:
    class NoReset:
        async def on_command(self, event_type: str, payload: dict[str, object]) -> object:
            if event_type == "command:reset":
                return {"decision": "deny", "message": "resets are off today"}
            return None

    process.hooks.register(NoReset(), name="no-reset")
    first = await say(process.gateway, "hello")
    denied = await say(process.gateway, "/reset")
    assert denied.notice
    assert denied.text == "resets are off today"
    assert first.session is not None
    session = await process.store.get_session(first.session.id)
    assert session is not None
    assert session.state is SessionState.ACTIVE


async def test_an_idle_session_is_reset_on_the_next_message_and_announced(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    settings = settings_for(
        f"sqlite:///{tmp_path}/sg.db", tmp_path, session_reset={"mode": "idle", "idle_after": "30m"}
    )
    process = await GatewayProcess.open(settings, clock=clock)
    try:
        first = await say(process.gateway, "before lunch")
        clock.advance(minutes=31)
        after = await say(process.gateway, "after lunch")
        assert first.session is not None
        assert after.session is not None
        assert after.session.id != first.session.id
        assert after.preamble is not None
        assert "automatically reset" in after.preamble
        ended = await process.store.get_session(first.session.id)
        assert ended is not None
        assert ended.end_reason is EndReason.AUTO_RESET
        assert ended.end_detail is not None
        assert "idle" in ended.end_detail
    finally:
        await process.close()
