"""Lease owner names: which process holds a lease, and whether it is a dead one of this host.

An owner name is `host:pid:random`. A lease (of a job, a timer or a conversation)
held by a process that died is normally taken over once it expires. When the dead
holder ran on this very host, its death can be seen at once (no process has its
pid any more), and the lease need not be waited out: a gateway restarted after a
crash picks up its conversations without a pause. This needs each replica's host
name to be its own (containers and pods get unique ones by default); a holder on
another host, or one whose pid is alive, is always waited for.
"""

from __future__ import annotations

import os
import socket

from sessiongate.clock import RandomSource


def replica_name(rand: RandomSource) -> str:
    """A name for this process's leases, unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{rand.getrandbits(32):08x}"


def dead_here(owner: str) -> bool:
    """True if `owner` names a process of this host that no longer runs."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0], int(parts[1])
    if host != socket.gethostname() or pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False
