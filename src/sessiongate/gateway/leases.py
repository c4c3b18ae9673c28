"""Conversation leases: one replica at a time handles the messages of a session key.

Several `sessiongate run` processes may share one Postgres database behind a load
balancer that does not route by conversation. Before handling a message, a
replica takes the key's lease in the store; a message of the same conversation
arriving at another replica meanwhile waits for it (or, under the reject
policy, is refused). The lease is renewed while the agent answers, released
after the reply, and every write made for the message carries its fencing
token: if the lease was lost (the replica stalled past its expiry and another
took over), the store refuses the old holder's writes with `LeaseLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sessiongate.clock import Clock
from sessiongate.errors import SessionGateError, StoreError
from sessiongate.gateway.lanes import Busy
from sessiongate.models import Lease
from sessiongate.owners import dead_here
from sessiongate.store.base import LeaseStore

log = logging.getLogger(__name__)

_FIRST_POLL = 0.02
_LONGEST_POLL = 0.5


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """How long a lease lasts unrenewed, and how long a message waits for a held one."""

    lease_seconds: float = 30.0
    wait_seconds: float = 60.0


class ConversationLeases:
    """Takes, keeps and gives back the leases of the conversations this replica handles."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        owner: str,
        clock: Clock,
        settings: LeaseSettings | None = None,
    ) -> None:
        self._store = store
        self._owner = owner
        self._clock = clock
        self._settings = settings or LeaseSettings()
        # Tokens of leases given up by their last write (`append_entries(release=True)`).
        self._given_back: set[int] = set()

    @property
    def owner(self) -> str:
        """The name this replica's leases carry."""
        return self._owner

    def given_back(self, lease: Lease) -> None:
        """Note that a write gave `lease` up (`release=True`): nothing left to release."""
        self._given_back.add(lease.token)

    @asynccontextmanager
    async def hold(self, key: str, *, wait: bool = True) -> AsyncIterator[Lease]:
        """Hold `key`'s lease for one message; raises `Busy` if another replica keeps it."""
        lease = await self._acquire(key, wait=wait)
        keeper = asyncio.create_task(self._keep(lease), name=f"lease:{key}")
        try:
            yield lease
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if lease.token in self._given_back:
                self._given_back.discard(lease.token)
            else:
                await self._release(lease)

    async def _acquire(self, key: str, *, wait: bool) -> Lease:
        seconds = self._settings.lease_seconds
        deadline = self._clock.now().timestamp() + self._settings.wait_seconds
        poll = _FIRST_POLL
        while True:
            lease = await self._store.acquire_lease(
                key, self._owner, at=self._clock.now(), lease_seconds=seconds
            )
            if lease is not None:
                return lease
            lease = await self._take_from_the_dead(key)
            if lease is not None:
                return lease
            if not wait or self._clock.now().timestamp() >= deadline:
                raise Busy(
                    "another gateway replica is still answering this conversation; "
                    "send it again in a moment"
                )
            await self._clock.sleep(poll)
            poll = min(poll * 2, _LONGEST_POLL)

    async def _take_from_the_dead(self, key: str) -> Lease | None:
        """Take `key` at once from a holder that was a process of this host and died."""
        held = await self._store.lease_of(key)
        if held is None or not dead_here(held.owner):
            return None
        log.info("taking the conversation %s over from %s, which is gone", key, held.owner)
        return await self._store.acquire_lease(
            key,
            self._owner,
            at=self._clock.now(),
            lease_seconds=self._settings.lease_seconds,
            replacing=held.owner,
        )

    async def _keep(self, lease: Lease) -> None:
        """Renew every third of the lease's length until cancelled or lost."""
        seconds = self._settings.lease_seconds
        while True:
            await self._clock.sleep(seconds / 3)
            try:
                renewed = await self._store.renew_lease(
                    lease, at=self._clock.now(), lease_seconds=seconds
                )
            except SessionGateError as exc:
                # The next renewal may get through; if not, the lease expires and
                # the store fences this replica's writes from then on.
                log.warning("renewing the lease on %s failed: %s", lease.key, exc)
                continue
            if renewed is None:
                if lease.token not in self._given_back:
                    log.warning("lost the lease on %s to another replica", lease.key)
                return

    async def _release(self, lease: Lease) -> None:
        try:
            await self._store.release_lease(lease)
        except StoreError as exc:
            # Not fatal: the lease expires on its own and another replica takes over.
            log.warning("releasing the lease on %s failed: %s", lease.key, exc)
