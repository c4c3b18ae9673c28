"""A provider that wraps another, exposing exactly the capabilities of the one inside.

The gateway decides what to do with a provider by what it can do:
`isinstance(provider, Reconciling)` makes `MemorySync` reconcile before
delivering, `isinstance(provider, Forgetting)` lets a forget job reach it. A
wrapper that always had `uncommitted_count` would make a provider without
reconciliation look reconciling, and one that never had it would hide the
capability. So a wrapper class is specialised at construction: `Wrapper(inner)`
builds (once per combination) a subclass that adds the optional methods the
inner provider has, and only those.

Every call goes through `_around`, which a wrapper overrides to add its
behaviour (a circuit breaker, injected faults, ...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self, TypeVar, cast

from sessiongate.memory.provider import (
    CommitOutcome,
    Forgetting,
    MemoryProvider,
    ProviderSession,
    RecallHit,
    RecallScope,
    Reconciling,
)
from sessiongate.models import Entry

T = TypeVar("T")


class Operation(StrEnum):
    """The provider calls a wrapper sees."""

    DELIVER = "deliver"
    COMMIT = "commit"
    RECALL = "recall"
    RECONCILE = "uncommitted_count"
    FORGET = "forget"


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """What one call is about, for a wrapper's decisions, journals and messages."""

    operation: Operation
    session_id: str | None = None
    user_id: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    size: int = 0
    idempotency_key: str | None = None

    def describe(self) -> str:
        """A short human description: `deliver seqs 3-4 of session s-1`."""
        text = str(self.operation)
        if self.first_seq is not None:
            text += f" seqs {self.first_seq}-{self.last_seq}"
        if self.session_id is not None:
            text += f" of session {self.session_id}"
        elif self.user_id is not None:
            text += f" for user {self.user_id!r}"
        return text


class ProviderWrapper:
    """A `MemoryProvider` delegating to `inner` through `_around`.

    Constructing any subclass returns an instance of a variant that also
    implements `Reconciling` and/or `Forgetting` exactly when `inner` does.
    """

    def __new__(cls, inner: MemoryProvider, *args: Any, **kwargs: Any) -> Self:
        base = _ORIGIN.get(cls, cls)
        variant = _variant(base, isinstance(inner, Reconciling), isinstance(inner, Forgetting))
        return cast(Self, object.__new__(variant))

    def __init__(self, inner: MemoryProvider) -> None:
        self._inner = inner

    @property
    def inner(self) -> MemoryProvider:
        """The wrapped provider."""
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def max_batch(self) -> int:
        return self._inner.max_batch

    async def _around(self, call: ProviderCall, run: Callable[[], Awaitable[T]]) -> T:
        """Run one call of the inner provider; subclasses add their behaviour here."""
        return await run()

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        call = ProviderCall(
            Operation.DELIVER,
            session_id=session.session_id,
            user_id=session.user_id,
            first_seq=entries[0].seq if entries else None,
            last_seq=entries[-1].seq if entries else None,
            size=len(entries),
            idempotency_key=idempotency_key,
        )
        await self._around(
            call,
            lambda: self._inner.deliver(session, entries, idempotency_key=idempotency_key),
        )

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        call = ProviderCall(
            Operation.COMMIT,
            session_id=session.session_id,
            user_id=session.user_id,
            first_seq=first_seq,
            last_seq=last_seq,
            size=last_seq - first_seq + 1,
            idempotency_key=idempotency_key,
        )
        return await self._around(
            call,
            lambda: self._inner.commit(
                session,
                epoch=epoch,
                first_seq=first_seq,
                last_seq=last_seq,
                idempotency_key=idempotency_key,
            ),
        )

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> Sequence[RecallHit]:
        call = ProviderCall(Operation.RECALL, user_id=scope.user_id)
        return await self._around(call, lambda: self._inner.recall(scope, query, limit=limit))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"


class _Reconciles(ProviderWrapper):
    """Adds `Reconciling` to a wrapper whose inner provider has it."""

    async def uncommitted_count(self, session: ProviderSession) -> int:
        inner = self._inner
        assert isinstance(inner, Reconciling)
        call = ProviderCall(
            Operation.RECONCILE, session_id=session.session_id, user_id=session.user_id
        )
        return await self._around(call, lambda: inner.uncommitted_count(session))


class _Forgets(ProviderWrapper):
    """Adds `Forgetting` to a wrapper whose inner provider has it."""

    async def forget(self, *, user_id: str | None, session: ProviderSession | None) -> None:
        inner = self._inner
        assert isinstance(inner, Forgetting)
        call = ProviderCall(
            Operation.FORGET,
            session_id=None if session is None else session.session_id,
            user_id=user_id if session is None else session.user_id,
        )
        await self._around(call, lambda: inner.forget(user_id=user_id, session=session))


def _variant(base: type[ProviderWrapper], reconciles: bool, forgets: bool) -> type[Any]:
    """`base`, plus the optional capabilities asked for (one class per combination)."""
    known = _VARIANTS.get((base, reconciles, forgets))
    if known is not None:
        return known
    mixins = ((_Reconciles,) if reconciles else ()) + ((_Forgets,) if forgets else ())
    if not mixins:
        return base
    variant = type(base.__name__, (base, *mixins), {"__module__": base.__module__})
    variant.__qualname__ = base.__qualname__
    _ORIGIN[variant] = base
    _VARIANTS[(base, reconciles, forgets)] = variant
    return variant


_VARIANTS: dict[tuple[type[Any], bool, bool], type[Any]] = {}
# variant -> the class it specialises, so re-wrapping starts from the plain class.
_ORIGIN: dict[type[Any], type[ProviderWrapper]] = {}
