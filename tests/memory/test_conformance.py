"""The provider conformance suite against the fake provider, its guarded form, and broken ones.

The broken providers show that each check can fail: a suite that passes
everything proves nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from sessiongate.memory.guard import GuardedProvider
from sessiongate.memory.local import LocalProvider
from sessiongate.memory.provider import (
    CommitOutcome,
    MemoryProvider,
    ProviderSession,
    RecallHit,
    RecallScope,
    Reconciling,
)
from sessiongate.models import Entry
from sessiongate.store import Store, open_store
from sessiongate.store.archive import archive_of
from sessiongate.testing import FakeClock
from sessiongate.testing.conformance import (
    ProviderConformance,
    ProviderFactory,
    ProviderUnderTest,
    check_commit_after_drain,
    check_isolation,
    check_no_duplicates_after_retries,
    check_order_kept,
    check_reconciles_lost_acknowledgement,
    seq_of,
)
from sessiongate.testing.provider import FakeProvider


@dataclass
class FakeProbe:
    """Reads what a `FakeProvider` holds."""

    fake: FakeProvider

    async def held_seqs(self, session: ProviderSession) -> Sequence[int]:
        return self.fake.seqs(session.session_id)

    async def committed_ranges(self, session: ProviderSession) -> Sequence[tuple[int, int]]:
        return [
            (c.first_seq, c.last_seq)
            for c in self.fake.commits
            if c.session_id == session.session_id
        ]


class KeysOnly:
    """A provider that relies on idempotency keys alone: no `uncommitted_count`."""

    def __init__(self, inner: FakeProvider) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        await self.inner.deliver(session, entries, idempotency_key=idempotency_key)

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        return await self.inner.commit(
            session,
            epoch=epoch,
            first_seq=first_seq,
            last_seq=last_seq,
            idempotency_key=idempotency_key,
        )

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> Sequence[RecallHit]:
        return await self.inner.recall(scope, query, limit=limit)


@dataclass
class LocalProbe:
    """Reads the local provider's archive straight from its SQLite file."""

    path: Path

    def _rows(self, sql: str, session_id: str) -> list[tuple[int, int, str]]:
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
            return list(db.execute(sql, (session_id,)))

    async def _archives(self, session_id: str) -> list[tuple[int, int, str]]:
        sql = (
            "SELECT first_seq, last_seq, text FROM memory_items "
            "WHERE kind = 'archive' AND session_id = ? ORDER BY epoch"
        )
        return await asyncio.to_thread(self._rows, sql, session_id)

    async def held_seqs(self, session: ProviderSession) -> Sequence[int]:
        archived = [
            seq
            for _, _, text in await self._archives(session.session_id)
            for line in text.splitlines()
            if (seq := seq_of(line)) is not None
        ]
        sql = "SELECT seq, seq, '' FROM memory_staged WHERE session_id = ? ORDER BY seq"
        staged = await asyncio.to_thread(self._rows, sql, session.session_id)
        return archived + [seq for seq, _, _ in staged]

    async def committed_ranges(self, session: ProviderSession) -> Sequence[tuple[int, int]]:
        return [(first, last) for first, last, _ in await self._archives(session.session_id)]


def subject(provider: MemoryProvider, fake: FakeProvider) -> ProviderUnderTest:
    return ProviderUnderTest(provider, FakeProbe(fake))


class TestKeyedFake(ProviderConformance):
    """Idempotency keys and reconciliation."""

    @pytest.fixture
    def make_provider(self) -> ProviderFactory:
        async def make() -> ProviderUnderTest:
            fake = FakeProvider(name="keyed", max_batch=3, idempotent=True)
            return subject(fake, fake)

        return make


class TestCountedFake(ProviderConformance):
    """No idempotency keys (like OpenViking's message add): reconciliation alone."""

    @pytest.fixture
    def make_provider(self) -> ProviderFactory:
        async def make() -> ProviderUnderTest:
            fake = FakeProvider(name="counted", max_batch=2, idempotent=False)
            return subject(fake, fake)

        return make


class TestKeysOnlyFake(ProviderConformance):
    """Idempotency keys alone: no reconciliation."""

    @pytest.fixture
    def make_provider(self) -> ProviderFactory:
        async def make() -> ProviderUnderTest:
            fake = FakeProvider(name="keys-only", max_batch=3, idempotent=True)
            provider = KeysOnly(fake)
            assert not isinstance(provider, Reconciling)
            return subject(provider, fake)

        return make


class TestGuardedFake(ProviderConformance):
    """The guard in front of a counting provider keeps its contract (and its capabilities)."""

    @pytest.fixture
    def make_provider(self) -> ProviderFactory:
        async def make() -> ProviderUnderTest:
            fake = FakeProvider(name="guarded", max_batch=2, idempotent=False)
            guarded = GuardedProvider(fake, clock=FakeClock())
            assert isinstance(guarded, Reconciling)
            return subject(guarded, fake)

        return make


class TestLocalOnSQLite(ProviderConformance):
    """The built-in local provider, on the embedded default store."""

    @pytest.fixture
    async def make_provider(self, tmp_path: Path) -> AsyncIterator[ProviderFactory]:
        stores: list[Store] = []

        async def make() -> ProviderUnderTest:
            path = tmp_path / f"local-{len(stores)}.db"
            store = await open_store(f"sqlite:///{path}")
            stores.append(store)
            provider = LocalProvider(archive_of(store), max_batch=3)
            return ProviderUnderTest(provider, LocalProbe(path))

        yield make
        for store in stores:
            await store.close()


# -- the checks fail for providers that break the contract -----------------------------------


async def test_duplicates_are_caught_without_keys_or_reconciliation() -> None:
    fake = FakeProvider(name="careless", max_batch=2, idempotent=False)
    with pytest.raises(AssertionError, match="once each"):
        await check_no_duplicates_after_retries(subject(KeysOnly(fake), fake))


async def test_a_lost_acknowledgement_applied_twice_is_caught() -> None:
    fake = FakeProvider(name="careless", max_batch=2, idempotent=False)
    with pytest.raises(AssertionError, match="once each"):
        await check_reconciles_lost_acknowledgement(subject(KeysOnly(fake), fake))


class ReversingProvider(FakeProvider):
    """Stores each batch back to front."""

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        await super().deliver(session, list(reversed(entries)), idempotency_key=idempotency_key)


async def test_a_provider_that_reorders_is_caught() -> None:
    fake = ReversingProvider(name="reversing", max_batch=3)
    with pytest.raises(AssertionError, match="in order"):
        await check_order_kept(subject(fake, fake))


class DroppingProvider(FakeProvider):
    """Acknowledges its second batch without keeping it."""

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        if self.delivery_calls == 1:
            self.delivery_calls += 1
            return
        await super().deliver(session, entries, idempotency_key=idempotency_key)


async def test_a_commit_of_seqs_the_provider_never_got_is_caught() -> None:
    fake = DroppingProvider(name="dropping", max_batch=2, idempotent=True)
    with pytest.raises(AssertionError, match=r"seqs \[3, 4\] were not delivered"):
        await check_commit_after_drain(subject(KeysOnly(fake), fake))


class LeakyProvider(FakeProvider):
    """Recalls from every user's sessions."""

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> list[RecallHit]:
        hits: list[RecallHit] = []
        for owner in set(self.owners.values()):
            if owner is not None:
                hits += await super().recall(RecallScope(owner), query, limit=limit)
        return hits[:limit]


async def test_a_provider_that_leaks_between_users_is_caught() -> None:
    fake = LeakyProvider(name="leaky", max_batch=3)
    with pytest.raises(AssertionError, match="returned others' memories"):
        await check_isolation(subject(fake, fake))


async def test_a_recall_that_finds_nothing_is_caught_when_transcripts_are_searchable() -> None:
    class Amnesic(FakeProvider):
        async def recall(self, scope: RecallScope, query: str, *, limit: int) -> list[RecallHit]:
            return []

    fake = Amnesic(name="amnesic", max_batch=3)
    with pytest.raises(AssertionError, match="did not find their own words"):
        await check_isolation(subject(fake, fake))
    await check_isolation(ProviderUnderTest(fake, FakeProbe(fake), recalls_transcripts=False))
