"""Lease owner names, and telling a dead process of this host from a live one."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys

from sessiongate.owners import dead_here, replica_name


def test_a_name_carries_the_host_and_the_pid() -> None:
    name = replica_name(random.Random(1))
    host, pid, tag = name.rsplit(":", 2)
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert len(tag) == 8
    assert replica_name(random.Random(2)) != name


def test_only_a_gone_process_of_this_host_is_dead() -> None:
    here = socket.gethostname()
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = int(ended.stdout)
    assert dead_here(f"{here}:{gone}:0000beef")
    assert not dead_here(f"{here}:{os.getpid()}:0000beef")  # this very process
    assert not dead_here(f"{here}:{os.getppid()}:0000beef")  # alive
    assert not dead_here(f"elsewhere-{here}:{gone}:0000beef")  # another host: wait it out
    for malformed in ("", "gateway", f"{here}:notapid:x", f"{here}:-5:x", f"{here}:0:x"):
        assert not dead_here(malformed)
