"""The reaper: a dead process of this host leaves nothing leased behind it."""

from __future__ import annotations

import socket
import subprocess
import sys

from sessiongate.lifecycle.reaper import Reaper
from sessiongate.store.base import Store
from sessiongate.testing import FakeClock, new_job


def gone_owner() -> str:
    """The lease owner name of a process of this host that has ended."""
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{socket.gethostname()}:{int(ended.stdout)}:0000dead"


async def test_only_the_leases_of_a_gone_local_process_end(store: Store, clock: FakeClock) -> None:
    dead, remote = gone_owner(), "another-host:1:0000beef"
    await store.enqueue([new_job("a"), new_job("b")], at=clock.now())
    [of_dead] = await store.claim_jobs(dead, at=clock.now(), lease_seconds=600)
    [of_remote] = await store.claim_jobs(remote, at=clock.now(), lease_seconds=600)
    await store.acquire_lease("key", dead, at=clock.now(), lease_seconds=600)
    woken: list[bool] = []
    reaper = Reaper(store, clock=clock, on_reaped=lambda: woken.append(True))
    assert await reaper.reap_once() == 2
    assert woken == [True]
    assert await store.lease_holders(at=clock.now()) == [remote]
    [taken] = await store.claim_jobs("heir", at=clock.now(), lease_seconds=60)
    assert taken.id == of_dead.id
    kept = await store.get_job(of_remote.id)
    assert kept is not None
    assert kept.lease_owner == remote
    assert await reaper.reap_once() == 0
    assert woken == [True]
