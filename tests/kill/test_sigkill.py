"""The gateway SIGKILLed at random moments under load, and restarted, on SQLite.

A scripted load (conversations over the HTTP API with `/new`, `/branch` and
`/compress`, idle expiry in seconds) runs against one `sessiongate run` process
that is killed with SIGKILL several times and started again. Afterwards, checked
from outside the process: every accepted message is in the ledger, ledgers are
dense, every session ended exactly once and was committed up to its last turn,
the local provider archived every turn exactly once, every `session:start` has
exactly one `session:end` (by `event_id`), and there are no dead letters.

Reduced size in the suite; `SESSIONGATE_KILL_CONVERSATIONS=200
SESSIONGATE_KILL_ROUNDS=20 pytest tests/kill` runs the full size.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kill.harness import (
    CONVERSATIONS,
    check_events,
    check_local_archive,
    check_store,
    configure,
    free_port,
    run_load,
)


def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = configure(tmp_path, port)
    run = asyncio.run(run_load(config, port, seed=20261201))
    assert len(run.accepted) > CONVERSATIONS  # the load really ran
    ledgers = asyncio.run(check_store(tmp_path / "sg.db", run.accepted))
    check_local_archive(tmp_path / "sg.db", ledgers)
    check_events(tmp_path / "events.jsonl")
