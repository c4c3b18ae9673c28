"""`sessiongate prune [--dry-run]` against SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.lifecycle.runtime import Lifecycle
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.memory.registry import build_providers
from sessiongate.models import ChatType, EndReason, Role, SessionState, Source
from sessiongate.store import Store
from sessiongate.testing import FakeClock

from .seeding import Seeded, json_of

ALICE = Source(platform="api", chat_id="alice", chat_type=ChatType.DM, user_id="alice")
BOB = Source(platform="api", chat_id="bob", chat_type=ChatType.DM, user_id="bob")
CAROL = Source(platform="api", chat_id="carol", chat_type=ChatType.DM, user_id="carol")


def lifecycle_at(store: Store, clock: FakeClock) -> Lifecycle:
    hooks, _ = HookDispatcher.load(None, entry_points=False)
    providers = build_providers({"local": {}}, store=store)
    settings = LifecycleSettings(providers=("local",))
    return Lifecycle(store, settings, providers=providers, hooks=hooks, clock=clock)


async def seed_history(store: Store) -> dict[str, str]:
    """Alice talked 120 days ago and then went quiet; Carol's end never reached memory;
    Bob talked yesterday."""
    clock = FakeClock(datetime.now(UTC) - timedelta(days=120))
    lifecycle = lifecycle_at(store, clock)
    engine = lifecycle.engine
    old = (await engine.route(ALICE)).session
    for n in range(3):
        await engine.record(old.id, Role.USER, f"alice {n}")
    quiet = (await engine.new_session(ALICE)).session
    await lifecycle.drain()
    carol = (await engine.route(CAROL)).session
    await engine.record(carol.id, Role.USER, "carol's only message")
    # Carol's commit stays pending: nobody drains it. Her new session goes quiet too.
    carol_next = (await engine.new_session(CAROL)).session
    clock.advance(119 * 86_400)
    bob = (await engine.route(BOB)).session
    await engine.record(bob.id, Role.USER, "bob, yesterday")
    return {
        "old": old.id,
        "quiet": quiet.id,
        "carol": carol.id,
        "carol_next": carol_next.id,
        "bob": bob.id,
    }


def test_dry_run_shows_exactly_what_prune_then_removes(store_url: str) -> None:
    seeded = Seeded(store_url, "", "", "")
    ids = seeded.with_store(seed_history)
    dry = json_of(seeded, "prune", "--dry-run")
    assert dry["dry_run"] is True
    idle = {s["session_id"] for s in dry["ended_idle"]}
    assert idle == {ids["quiet"], ids["carol_next"]}
    assert dry["removed_sessions"] == [ids["old"]]
    assert dry["removed_entries"] == 3
    assert dry["removed_jobs"] > 0
    assert dry["removed_dead_letters"] == []

    async def untouched(store: Store) -> None:
        assert await store.get_session(ids["old"]) is not None
        quiet = await store.get_session(ids["quiet"])
        assert quiet is not None
        assert quiet.state is SessionState.ACTIVE

    seeded.with_store(untouched)
    real = json_of(seeded, "prune")
    assert real == {**dry, "dry_run": False}

    async def after(store: Store) -> None:
        assert await store.get_session(ids["old"]) is None
        assert await store.entries(ids["old"]) == []
        quiet = await store.get_session(ids["quiet"])
        assert quiet is not None
        assert quiet.end_reason is EndReason.PRUNE  # through the funnel, like any end
        assert quiet.state is not SessionState.ACTIVE
        for kept in ("carol", "bob"):
            assert await store.get_session(ids[kept]) is not None
        bob = await store.get_session(ids["bob"])
        assert bob is not None
        assert bob.state is SessionState.ACTIVE

    seeded.with_store(after)
    again = json_of(seeded, "prune", "--dry-run")
    assert again["ended_idle"] == []
    assert again["removed_sessions"] == []


def test_a_pruned_conversation_never_comes_back(store_url: str) -> None:
    seeded = Seeded(store_url, "", "", "")
    ids = seeded.with_store(seed_history)
    json_of(seeded, "prune")

    async def next_message(store: Store) -> None:
        lifecycle = lifecycle_at(store, FakeClock(datetime.now(UTC)))
        routed = await lifecycle.engine.route(ALICE)
        assert routed.started
        assert routed.session.id not in (ids["old"], ids["quiet"])
        assert routed.session.turn_count == 0
        assert await store.entries(routed.session.id) == []

    seeded.with_store(next_message)


def test_prune_prints_a_table_and_changes_nothing_when_dry(store_url: str) -> None:
    seeded = Seeded(store_url, "", "", "")
    ids = seeded.with_store(seed_history)
    result = seeded.invoke("prune", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout
    assert ids["old"] in result.stdout
    assert ids["quiet"] in result.stdout
    assert json_of(seeded, "prune", "--dry-run")["removed_sessions"] == [ids["old"]]
