"""A store wrapper that crashes the process (simulated) at a chosen await.

`SimulatedCrash` derives from `BaseException` so that no isolation point
(`except Exception`) can swallow it: it unwinds the whole simulated process,
as a SIGKILL would. The crash happens either before the store call (nothing
written) or after it (written, but the caller never learns it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sessiongate.store.base import Store


class SimulatedCrash(BaseException):
    """The simulated process died here."""


class CrashingStore:
    """Forwards to a real store; arms a crash at the N-th call from now."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self._countdown: int | None = None
        self._after = False
        self.calls = 0

    @property
    def inner(self) -> Store:
        return self._inner

    def arm(self, calls_from_now: int, *, after: bool) -> None:
        """Crash at that call: `after` means the call takes effect first."""
        self._countdown = max(1, calls_from_now)
        self._after = after

    def disarm(self) -> None:
        self._countdown = None

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target) or name in {"close"}:
            return target
        return self._wrap(name, target)

    def _wrap(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            crash = self._tick()
            if crash and not self._after:
                raise SimulatedCrash(f"before {name}")
            result = await target(*args, **kwargs)
            if crash:
                raise SimulatedCrash(f"after {name}")
            return result

        return call

    def _tick(self) -> bool:
        if self._countdown is None:
            return False
        self._countdown -= 1
        if self._countdown > 0:
            return False
        self._countdown = None
        return True
