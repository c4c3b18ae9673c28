"""The lease half of the memory store: conversation leases and their fencing tokens."""

from __future__ import annotations

from datetime import datetime

from sessiongate.errors import LeaseLost
from sessiongate.models import Lease
from sessiongate.store import intake
from sessiongate.store.memory_outbox import MemoryOutbox, lease_live
from sessiongate.validation import check_identifier, check_text


class MemoryLeases(MemoryOutbox):
    """`LeaseStore` over a dict, under the memory store's lock."""

    def __init__(self) -> None:
        super().__init__()
        self._leases: dict[str, Lease] = {}
        self._last_lease_token = 0

    async def acquire_lease(
        self,
        key: str,
        owner: str,
        *,
        at: datetime,
        lease_seconds: float,
        replacing: str | None = None,
    ) -> Lease | None:
        """See `LeaseStore.acquire_lease`."""
        async with self._open():
            check_identifier(key, what="session key")
            check_text(owner, what="lease owner")
            at = intake.utc(at, "lease time")
            length = intake.lease_length(lease_seconds)
            held = self._leases.get(key)
            dead = replacing is not None and held is not None and held.owner == replacing
            if held is not None and lease_live(held.expires_at, at) and not dead:
                return None
            self._last_lease_token += 1
            lease = Lease(key, owner, self._last_lease_token, at, at + length)
            self._leases[key] = lease
            return lease

    async def renew_lease(
        self, lease: Lease, *, at: datetime, lease_seconds: float
    ) -> Lease | None:
        """See `LeaseStore.renew_lease`."""
        async with self._open():
            at = intake.utc(at, "lease time")
            length = intake.lease_length(lease_seconds)
            if not self._holds(lease):
                return None
            renewed = Lease(lease.key, lease.owner, lease.token, lease.acquired_at, at + length)
            self._leases[lease.key] = renewed
            return renewed

    async def release_lease(self, lease: Lease) -> bool:
        """See `LeaseStore.release_lease`."""
        async with self._open():
            if not self._holds(lease):
                return False
            del self._leases[lease.key]
            return True

    async def lease_of(self, key: str) -> Lease | None:
        """See `LeaseStore.lease_of`."""
        async with self._open():
            return self._leases.get(key)

    def _holds(self, lease: Lease) -> bool:
        held = self._leases.get(lease.key)
        return held is not None and held.token == lease.token

    def _check_fence(self, fence: Lease | None) -> None:
        """Raise `LeaseLost` unless `fence` (when given) still holds its key."""
        if fence is not None and not self._holds(fence):
            raise LeaseLost(
                f"the lease on {fence.key!r} (token {fence.token}) was taken by another "
                "replica; this one no longer writes for that conversation"
            )

    def _key_busy(self, key: str, at: datetime) -> bool:
        """True while a live lease holds `key` (a message of it is being handled)."""
        held = self._leases.get(key)
        return held is not None and lease_live(held.expires_at, at)
