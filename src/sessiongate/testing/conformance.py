"""The conformance suite every memory provider must pass.

Each check drives a fresh provider through the gateway's own machinery — a
`MemoryStore`, `MemorySync` and the outbox `Worker` with a fast retry policy on
a fake clock — wrapped in a `FaultyProvider` that injects refused calls and lost
acknowledgements, and then reads back what the provider holds through a small
probe the provider's own test supplies. The checks: order kept, no duplicates
after retries, reconciliation after a lost acknowledgement, commit only after
the cursor reached the epoch's last seq, isolation between users, bounded batch
size.

A provider passes only if it is exactly-once in effect under retries: it must
honour idempotency keys, or implement `Reconciling` (or both).

Use it in a test module (pytest-asyncio in auto mode, or mark the class with
`pytest.mark.asyncio`):

    class TestMyProvider(ProviderConformance):
        @pytest.fixture
        def make_provider(self) -> ProviderFactory:
            async def make() -> ProviderUnderTest:
                provider = MyProvider(max_batch=3)
                return ProviderUnderTest(provider, MyProbe(provider))
            return make

or call the `check_*` functions (all listed in `CHECKS`) from your own tests.
A small `max_batch` (2 to 5) keeps the checks short: they write a few batches
per session. Session and user ids are fresh for every check, so a provider
with persistent state can be reused across checks.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sessiongate.lifecycle.consumers import MEMORY_COMMIT, checkpoint_jobs
from sessiongate.lifecycle.worker import Worker
from sessiongate.memory.provider import MemoryProvider, ProviderSession, RecallScope, Reconciling
from sessiongate.memory.sync import MemorySync
from sessiongate.memory.wrapper import Operation, ProviderCall
from sessiongate.models import Role, Session
from sessiongate.retry import RetryPolicies, RetryPolicy
from sessiongate.store.memory import MemoryStore
from sessiongate.testing.clock import FakeClock
from sessiongate.testing.proxy import Fault, FaultyProvider
from sessiongate.testing.records import new_entry, new_session

__all__ = [
    "CHECKS",
    "ProviderConformance",
    "ProviderFactory",
    "ProviderProbe",
    "ProviderUnderTest",
    "check_bounded_batches",
    "check_commit_after_drain",
    "check_isolation",
    "check_no_duplicates_after_retries",
    "check_order_kept",
    "check_reconciles_lost_acknowledgement",
    "seq_of",
]

_SEQ = re.compile(r"\bseq (\d+)\b")
_ROUNDS = 60


def seq_of(text: str) -> int | None:
    """The seq a conformance entry's text carries (`... seq 7: ...`), for probes that read texts."""
    match = _SEQ.search(text)
    return int(match.group(1)) if match else None


class ProviderProbe(Protocol):
    """Reads back what a provider holds; the provider's own test implements it."""

    async def held_seqs(self, session: ProviderSession) -> Sequence[int]:
        """The seqs of every entry the provider holds for the session, in the order it got them.

        A duplicated entry appears twice. Entries a failed commit lost are not held.
        """
        ...

    async def committed_ranges(self, session: ProviderSession) -> Sequence[tuple[int, int]]:
        """The `(first_seq, last_seq)` of each effective commit of the session, in order."""
        ...


@dataclass
class ProviderUnderTest:
    """A fresh provider, the probe that reads it back, and what its recall can promise."""

    provider: MemoryProvider
    probe: ProviderProbe
    # True when recall searches what was committed (transcripts), so the isolation
    # check also requires a user's own words to be found; False when recall only
    # returns what an extraction model made of them.
    recalls_transcripts: bool = True
    # Awaited with a user id before recalling: wait until that user's commits are
    # searchable (asynchronous indexing).
    settle: Callable[[str], Awaitable[None]] | None = None


ProviderFactory = Callable[[], Awaitable[ProviderUnderTest]]


@dataclass
class _Rig:
    """The gateway's delivery machinery over a memory store, around one provider."""

    proxy: FaultyProvider
    store: MemoryStore = field(default_factory=MemoryStore)
    clock: FakeClock = field(default_factory=FakeClock)
    worker: Worker = field(init=False)

    def __post_init__(self) -> None:
        sync = MemorySync(self.store, {self.proxy.name: self.proxy}, clock=self.clock)
        fast = RetryPolicy(base_delay=1.0, max_delay=1.0, max_attempts=_ROUNDS)
        self.worker = Worker(
            self.store,
            {MEMORY_COMMIT: sync.commit_job},
            owner="conformance",
            clock=self.clock,
            rand=random.Random(20260301),
            retry=RetryPolicies(default=fast),
        )

    @property
    def max_batch(self) -> int:
        return self.proxy.max_batch

    async def open(self, user_id: str) -> Session:
        """A new active session of `user_id`."""
        session_id = f"conf-{uuid.uuid4().hex[:16]}"
        return await self.store.start_session(
            new_session(session_id, at=self.clock.now(), user_id=user_id, chat_id=user_id)
        )

    async def say(self, session: Session, count: int, words: str = "") -> Session:
        """Append `count` entries (alternating user and assistant) to the session's ledger."""
        self.clock.advance(1.0)
        entries = [
            new_entry(
                f"conformance seq {seq}: {words}".rstrip(),
                role=Role.USER if seq % 2 else Role.ASSISTANT,
            )
            for seq in range(session.turn_count + 1, session.turn_count + count + 1)
        ]
        await self.store.append_entries(session.id, entries, at=self.clock.now())
        found = await self.store.get_session(session.id)
        assert found is not None
        return found

    async def checkpoint(self, *sessions: Session) -> None:
        """Enqueue a commit of each session up to its last seq (a rolling checkpoint)."""
        for session in sessions:
            jobs = checkpoint_jobs(session.id, session.turn_count, providers=(self.proxy.name,))
            await self.store.enqueue(jobs, at=self.clock.now())

    async def settle(self) -> None:
        """Run jobs, retrying failures after their backoff, until none is left."""
        for _ in range(_ROUNDS):
            await self.worker.run_once()
            stats = await self.store.outbox_stats()
            if stats.pending == 0 and stats.running == 0:
                break
            self.clock.advance(1.0)
        stats = await self.store.outbox_stats()
        dead = await self.store.dead_letters()
        assert not dead, f"jobs gave up: {[d.last_error for d in dead]}"
        assert stats.pending == 0, f"jobs still pending after {_ROUNDS} rounds: {stats}"

    def deliveries(self, session: Session) -> list[tuple[int, int]]:
        """The seq ranges of the deliver calls about `session` that reached the provider."""
        return [
            _span(e.call)
            for e in self.proxy.calls(Operation.DELIVER)
            if e.delegated and e.call.session_id == session.id
        ]


def _seqs(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


def _span(call: ProviderCall) -> tuple[int, int]:
    """The seq range of a deliver or commit call."""
    assert call.first_seq is not None, f"{call.describe()} names no seqs"
    assert call.last_seq is not None, f"{call.describe()} names no seqs"
    return call.first_seq, call.last_seq


async def _assert_holds(subject: ProviderUnderTest, session: Session, *epochs: int) -> None:
    """The provider holds seqs 1..turn_count once each, in order, committed in these epochs."""
    ref = ProviderSession.of(session)
    held = list(await subject.probe.held_seqs(ref))
    assert held == _seqs(1, session.turn_count), (
        f"{subject.provider.name} holds seqs {held} of session {session.id}, "
        f"expected 1..{session.turn_count} once each, in order"
    )
    ranges: list[tuple[int, int]] = []
    first = 1
    for last in epochs:
        ranges.append((first, last))
        first = last + 1
    committed = [(a, b) for a, b in await subject.probe.committed_ranges(ref)]
    assert committed == ranges, (
        f"{subject.provider.name} committed {committed} of session {session.id}, expected {ranges}"
    )


async def check_order_kept(subject: ProviderUnderTest) -> None:
    """Two sessions of one user, delivered concurrently in several batches and two epochs."""
    rig = _Rig(FaultyProvider(subject.provider))
    first, second = await rig.open("conf-order"), await rig.open("conf-order")
    first = await rig.say(first, 2 * rig.max_batch + 1, "first")
    second = await rig.say(second, rig.max_batch + 1, "second")
    await rig.checkpoint(first, second)
    await rig.settle()
    epoch_one = (first.turn_count, second.turn_count)
    first, second = await rig.say(first, 2, "first"), await rig.say(second, 1, "second")
    await rig.checkpoint(first, second)
    await rig.settle()

    await _assert_holds(subject, first, epoch_one[0], first.turn_count)
    await _assert_holds(subject, second, epoch_one[1], second.turn_count)
    for session in (first, second):
        ranges = rig.deliveries(session)
        starts = [r[0] for r in ranges]
        assert starts == [1] + [last + 1 for _, last in ranges[:-1]], (
            f"deliveries of session {session.id} were not consecutive: {ranges}"
        )


async def check_no_duplicates_after_retries(subject: ProviderUnderTest) -> None:
    """Refused calls and lost acknowledgements of every kind leave each entry held once."""
    proxy = FaultyProvider(subject.provider)
    rig = _Rig(proxy)
    proxy.schedule(Operation.DELIVER, None, Fault.LOSE_ACK, Fault.REFUSE, Fault.LOSE_ACK)
    proxy.schedule(Operation.COMMIT, Fault.REFUSE, Fault.LOSE_ACK)
    if isinstance(proxy, Reconciling):
        proxy.schedule(Operation.RECONCILE, Fault.REFUSE)
    session = await rig.open("conf-retries")
    session = await rig.say(session, 3 * rig.max_batch + 1)
    await rig.checkpoint(session)
    await rig.settle()
    epoch_one = session.turn_count
    proxy.schedule(Operation.DELIVER, Fault.LOSE_ACK)
    proxy.schedule(Operation.COMMIT, Fault.LOSE_ACK)
    session = await rig.say(session, 2)
    await rig.checkpoint(session)
    await rig.settle()

    assert proxy.pending() == 0, "some scheduled faults never fired: the check proved nothing"
    await _assert_holds(subject, session, epoch_one, session.turn_count)


async def check_reconciles_lost_acknowledgement(subject: ProviderUnderTest) -> None:
    """A batch that landed but whose answer was lost is not applied twice.

    A reconciling provider is asked instead of being sent the batch again; a
    provider that relies on idempotency keys gets it again under the same key.
    """
    proxy = FaultyProvider(subject.provider)
    rig = _Rig(proxy)
    session = await rig.open("conf-reconcile")
    session = await rig.say(session, 2 * rig.max_batch)
    # The last batch before the commit lands, and its answer is lost.
    proxy.schedule(Operation.DELIVER, None, Fault.LOSE_ACK)
    await rig.checkpoint(session)
    await rig.settle()
    lost = proxy.calls(Operation.DELIVER)[1]
    assert lost.fault is Fault.LOSE_ACK
    epoch_one = session.turn_count
    # Lost again, and the session grows before the retry.
    proxy.schedule(Operation.DELIVER, Fault.LOSE_ACK)
    session = await rig.say(session, rig.max_batch)
    await rig.checkpoint(session)
    await rig.worker.run_once()
    epoch_two = session.turn_count
    session = await rig.say(session, 2)
    await rig.checkpoint(session)
    await rig.settle()

    assert proxy.pending() == 0, "some scheduled faults never fired: the check proved nothing"
    await _assert_holds(subject, session, epoch_one, epoch_two, session.turn_count)
    lost_span = _span(lost.call)
    sent = [
        e.call for e in proxy.calls(Operation.DELIVER) if e.delegated and _span(e.call) == lost_span
    ]
    if isinstance(proxy, Reconciling):
        assert len(sent) == 1, f"a reconciling provider was sent the lost batch again: {sent}"
        assert proxy.calls(Operation.RECONCILE), "the gateway never asked the provider"
    else:
        assert len(sent) == 2, f"the lost batch was not sent again: {sent}"
        assert sent[0].idempotency_key == sent[1].idempotency_key, (
            "a batch sent again must carry the same idempotency key"
        )


async def check_commit_after_drain(subject: ProviderUnderTest) -> None:
    """Every commit call covers only seqs the provider held when the call came in."""
    seen: list[tuple[ProviderCall, set[int]]] = []
    sessions: dict[str, Session] = {}

    async def look(call: ProviderCall) -> None:
        if call.operation is Operation.COMMIT and call.session_id in sessions:
            ref = ProviderSession.of(sessions[call.session_id])
            seen.append((call, set(await subject.probe.held_seqs(ref))))

    proxy = FaultyProvider(subject.provider, observe=look)
    rig = _Rig(proxy)
    session = await rig.open("conf-drain")
    sessions[session.id] = session
    session = await rig.say(session, 2 * rig.max_batch + 1)
    # The middle batch fails, then the last one loses its answer: no commit may
    # run until both are in.
    proxy.schedule(Operation.DELIVER, None, Fault.REFUSE, None, Fault.LOSE_ACK)
    await rig.checkpoint(session)
    await rig.settle()
    epoch_one = session.turn_count
    session = await rig.say(session, rig.max_batch + 2)
    proxy.schedule(Operation.DELIVER, Fault.REFUSE, None, Fault.REFUSE)
    await rig.checkpoint(session)
    await rig.settle()

    assert proxy.pending() == 0, "some scheduled faults never fired: the check proved nothing"
    for call, held in seen:
        missing = sorted(set(_seqs(*_span(call))) - held)
        assert not missing, f"{call.describe()} came while seqs {missing} were not delivered"
    assert [_span(c) for c, _ in seen] == [
        (1, epoch_one),
        (epoch_one + 1, session.turn_count),
    ]
    await _assert_holds(subject, session, epoch_one, session.turn_count)


async def check_isolation(subject: ProviderUnderTest) -> None:
    """Recall for one user never returns another user's memories."""
    rig = _Rig(FaultyProvider(subject.provider))
    suffix = uuid.uuid4().hex[:8]
    users = {f"conf-ada-{suffix}": "cardamom saffron", f"conf-bob-{suffix}": "pistachio hazelnut"}
    sessions: dict[str, Session] = {}
    for user, words in users.items():
        session = await rig.open(user)
        sessions[user] = await rig.say(session, rig.max_batch + 1, f"I love {words}")
        await rig.checkpoint(sessions[user])
    await rig.settle()
    for user in users:
        if subject.settle is not None:
            await subject.settle(user)

    for user, words in users.items():
        scope = RecallScope(user_id=user, platform="telegram")
        others = [w for other, ws in users.items() if other != user for w in ws.split()]
        for query in users.values():
            hits = await subject.provider.recall(scope, query, limit=20)
            foreign = [
                hit
                for hit in hits
                if hit.session_id not in (None, sessions[user].id)
                or any(word in hit.text.lower() for word in others)
            ]
            assert not foreign, (
                f"recall for {user} ({query!r}) returned others' memories: {foreign}"
            )
            if query == words and subject.recalls_transcripts:
                assert any(words.split()[0] in hit.text.lower() for hit in hits), (
                    f"recall for {user} did not find their own words {words!r}: {hits}"
                )


async def check_bounded_batches(subject: ProviderUnderTest) -> None:
    """No deliver call carries more than `max_batch` entries, retries included."""
    proxy = FaultyProvider(subject.provider)
    rig = _Rig(proxy)
    assert rig.max_batch >= 1, f"max_batch must be at least 1, got {rig.max_batch}"
    session = await rig.open("conf-batches")
    session = await rig.say(session, 3 * rig.max_batch + 2)
    proxy.schedule(Operation.DELIVER, None, Fault.REFUSE, Fault.LOSE_ACK)
    await rig.checkpoint(session)
    await rig.settle()
    epoch_one = session.turn_count
    session = await rig.say(session, 2 * rig.max_batch + 1)
    await rig.checkpoint(session)
    await rig.settle()

    assert proxy.pending() == 0, "some scheduled faults never fired: the check proved nothing"
    sizes = [e.call.size for e in proxy.calls(Operation.DELIVER)]
    assert sizes, "nothing was delivered"
    assert all(1 <= size <= rig.max_batch for size in sizes), (
        f"deliver calls of {sizes} entries for max_batch {rig.max_batch}"
    )
    assert max(sizes) == rig.max_batch, f"batches were never filled: {sizes}"
    await _assert_holds(subject, session, epoch_one, session.turn_count)


CHECKS: tuple[Callable[[ProviderUnderTest], Awaitable[None]], ...] = (
    check_order_kept,
    check_no_duplicates_after_retries,
    check_reconciles_lost_acknowledgement,
    check_commit_after_drain,
    check_isolation,
    check_bounded_batches,
)


class ProviderConformance:
    """Subclass it as `Test...` and define a `make_provider` fixture (a `ProviderFactory`)."""

    async def test_order_kept(self, make_provider: ProviderFactory) -> None:
        await check_order_kept(await make_provider())

    async def test_no_duplicates_after_retries(self, make_provider: ProviderFactory) -> None:
        await check_no_duplicates_after_retries(await make_provider())

    async def test_reconciles_lost_acknowledgement(self, make_provider: ProviderFactory) -> None:
        await check_reconciles_lost_acknowledgement(await make_provider())

    async def test_commit_after_drain(self, make_provider: ProviderFactory) -> None:
        await check_commit_after_drain(await make_provider())

    async def test_isolation(self, make_provider: ProviderFactory) -> None:
        await check_isolation(await make_provider())

    async def test_bounded_batches(self, make_provider: ProviderFactory) -> None:
        await check_bounded_batches(await make_provider())
