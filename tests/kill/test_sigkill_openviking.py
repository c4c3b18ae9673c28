"""The kill test with the real OpenViking server as a second memory provider, down for a while.

The load and the SIGKILLs of `test_sigkill.py`, against a gateway configured
with both the built-in `local` provider and the `openviking` provider (the
real OpenViking 0.5.2 server of `tests/integration/openviking/`, a fresh
account). Three seconds into the load the OpenViking server is stopped (SIGTERM)
for `SESSIONGATE_KILL_OUTAGE_SECONDS` (default 8; 0: no outage) and started
again, which takes it another 10-20 s to be healthy; the load goes on, and the
gateway is SIGKILLed at least once while the server is down and at least once
after it came back (while it catches up). The load has a quarter of
`SESSIONGATE_KILL_CONVERSATIONS` (at least 4) unless
`SESSIONGATE_KILL_OPENVIKING_CONVERSATIONS` says otherwise: OpenViking commits
take about a second each, 4 at a time, so every session ended costs time.

Afterwards, checked from outside the processes: every accepted message is in a
dense ledger; each provider holds every turn exactly once (local: the store's
cursors and the archives the local provider wrote; OpenViking: what the server
holds for the account, read over its HTTP API: each session's archives and live
messages, in ledger order, no duplicates, no unknown sessions); every ended
session is committed up to its last turn on both (cursors `committed_seq ==
turn_count` per provider, one OpenViking archive per recorded commit epoch);
every `session:start` has exactly one `session:end`; no dead letters. The
gateway's own retry policy and circuit breaker (neither is configurable) are
what catch up after the outage: the test configures only short leases and
polls, and a 0.1 s polling of OpenViking's commit tasks. Catching up takes
most of this test's time: the memory jobs that failed during the outage wait
out a full-jitter exponential backoff (up to 2^n s after n failures), and
OpenViking then commits about 4 sessions a second.

Reduced size in the suite (about 90 s on 2 cores; 50 s with no outage); the
full size, with a 60 s outage (about 6 minutes for this test, 12 for both):

    SESSIONGATE_KILL_CONVERSATIONS=200 SESSIONGATE_KILL_ROUNDS=20 \
    SESSIONGATE_KILL_OUTAGE_SECONDS=60 uv run pytest tests/kill
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.openviking.server import ROOT_KEY, OpenVikingServer
from kill.harness import (
    CONVERSATIONS,
    Ledger,
    Outage,
    check_events,
    check_local_archive,
    check_store,
    configure,
    free_port,
    run_load,
    said,
)
from sessiongate.memory.openviking import openviking_user

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = float(os.environ.get("SESSIONGATE_KILL_OUTAGE_SECONDS", "8"))
# OpenViking takes about a second per commit and the gateway's provider guard lets
# 4 run at once, so it commits at most ~4 sessions a second: a quarter of the
# conversations by default keeps the catch-up after the outage within minutes.
OV_CONVERSATIONS = int(
    os.environ.get("SESSIONGATE_KILL_OPENVIKING_CONVERSATIONS", str(max(4, CONVERSATIONS // 4)))
)
KEY_ENV = "SESSIONGATE_TEST_OPENVIKING_KEY"
PROVIDERS = ("local", "openviking")


@dataclass(frozen=True)
class Held:
    """What OpenViking holds for one session."""

    info: dict[str, Any]
    # The messages of every archive not lost to a failed extraction, oldest first,
    # then the live (uncommitted) ones: (role, text).
    messages: list[tuple[str, str]]
    archives: int
    failed: int
    live: int


class Holdings:
    """Reads what the server holds for one account over its HTTP API."""

    def __init__(self, account: str) -> None:
        self._account = account
        self._limit = asyncio.Semaphore(8)

    async def _get(self, client: httpx.AsyncClient, user: str, path: str, **params: Any) -> Any:
        headers = {
            "X-API-Key": ROOT_KEY,
            "X-OpenViking-Account": self._account,
            "X-OpenViking-User": user,
        }
        async with self._limit:
            response = await client.get(path, headers=headers, params=params)
        response.raise_for_status()
        return response.json()["result"]

    async def sessions(self, client: httpx.AsyncClient, user: str) -> set[str]:
        listed = await self._get(client, user, "/api/v1/sessions")
        return {str(item["session_id"]) for item in listed}

    async def _messages(
        self, client: httpx.AsyncClient, user: str, uri: str
    ) -> list[tuple[str, str]]:
        text = await self._get(client, user, "/api/v1/content/read", uri=uri, raw=True)
        messages: list[tuple[str, str]] = []
        for line in str(text or "").split("\n"):
            if line.strip():
                message = json.loads(line)
                parts = message.get("parts") or [{"type": "text", "text": message.get("content")}]
                body = "".join(str(p.get("text") or "") for p in parts if p.get("type") == "text")
                messages.append((str(message["role"]), body))
        return messages

    async def held(self, client: httpx.AsyncClient, user: str, session_id: str) -> Held:
        info = await self._get(client, user, f"/api/v1/sessions/{session_id}")
        uri = info["uri"]
        listed = await self._get(client, user, "/api/v1/fs/ls", uri=uri, simple=True)
        archives: list[str] = []
        if f"{uri}/history" in listed:
            archives = sorted(
                await self._get(client, user, "/api/v1/fs/ls", uri=f"{uri}/history", simple=True)
            )
        messages: list[tuple[str, str]] = []
        failed = 0
        for archive in archives:
            files = await self._get(
                client, user, "/api/v1/fs/ls", uri=archive, simple=True, show_all_hidden=True
            )
            if f"{archive}/.failed.json" in files:
                failed += 1  # its extraction failed: the gateway replays the epoch
                continue
            messages += await self._messages(client, user, f"{archive}/messages.jsonl")
        live = await self._messages(client, user, f"{uri}/messages.jsonl")
        return Held(info, messages + live, len(archives) - failed, failed, len(live))


def commit_epochs(db: Path) -> dict[str, int]:
    """Each session's OpenViking commit epoch, as its cursor recorded it."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT session_id, commit_epoch FROM cursors WHERE provider = 'openviking'"
        ).fetchall()
    conn.close()
    return {str(session_id): int(epoch) for session_id, epoch in rows}


def commit_failures(db: Path, provider: str) -> list[tuple[int, str]]:
    """(attempts, last error) of the provider's commit jobs that failed at least once."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT attempts, last_error FROM jobs WHERE kind = 'memory.commit'"
            " AND ordering_key LIKE :key AND last_error IS NOT NULL",
            {"key": f"memory:{provider}:%"},
        ).fetchall()
    conn.close()
    return [(int(attempts), str(error)) for attempts, error in rows]


async def check_openviking(
    server: OpenVikingServer, account: str, ledgers: list[Ledger], db: Path
) -> None:
    """Every turn of every session held exactly once by OpenViking, and committed."""
    holdings = Holdings(account)
    epochs = commit_epochs(db)
    by_user: dict[str, list[Ledger]] = defaultdict(list)
    for ledger in ledgers:
        s = ledger.session
        by_user[openviking_user(s.user_id, platform=s.platform, chat_id=s.chat_id)].append(ledger)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        for user, owned in sorted(by_user.items()):
            delivered = {ledger.session.id for ledger in owned if ledger.entries}
            assert await holdings.sessions(client, user) == delivered, user
            ended = [ledger for ledger in owned if ledger.entries]
            helds = await asyncio.gather(
                *(holdings.held(client, user, ledger.session.id) for ledger in ended)
            )
            for ledger, held in zip(ended, helds, strict=True):
                sid = ledger.session.id
                assert held.messages == said(ledger.entries), sid
                assert (held.live, held.info["message_count"]) == (0, 0), sid
                assert held.archives == epochs[sid] >= 1, (sid, held.archives, epochs[sid])
                assert held.info["commit_count"] == held.archives + held.failed, sid


def test_sigkill_with_openviking_stopped_for_a_while_loses_and_doubles_nothing(
    tmp_path: Path, openviking: OpenVikingServer
) -> None:
    account = f"kill-{uuid.uuid4().hex[:12]}"
    port = free_port()
    openviking_settings = {
        "endpoint": openviking.url,
        "auth": "trusted",
        "account": account,
        "key_env": KEY_ENV,
        "task_poll_interval": 0.1,
    }
    config = configure(tmp_path, port, providers={"local": {}, "openviking": openviking_settings})
    outage = None
    if OUTAGE_SECONDS > 0:
        outage = Outage(openviking.stop, openviking.start, OUTAGE_SECONDS)
    run = asyncio.run(
        run_load(
            config,
            port,
            seed=20261202,
            env={KEY_ENV: ROOT_KEY},
            outage=outage,
            conversations=OV_CONVERSATIONS,
            # The memory retry policy backs off exponentially (full jitter) after
            # each failed attempt, and the circuit breaker stays open 30 s: catching
            # up may take a few times as long as the outage.
            settle_seconds=300 + 6 * OUTAGE_SECONDS,
        )
    )
    print(
        f"kill run: {run.kills} kills, {len(run.accepted)} accepted, "
        f"HTTP {dict(run.statuses)}, {run.elapsed}"
    )
    for refusal, count in run.refusals.most_common(5):
        print(f"refused {count}x: {refusal}")
    assert len(run.accepted) > OV_CONVERSATIONS  # the load really ran
    db = tmp_path / "sg.db"
    if outage is not None:
        print(
            f"outage: down {outage.down_seconds:.1f} s, {outage.kills} kills while down, "
            f"{outage.kills_after} after"
        )
        assert (outage.kills >= 1, outage.kills_after >= 1) == (True, True)
        failures = commit_failures(db, "openviking")
        print(
            f"openviking commit jobs that failed: {len(failures)}, max attempts "
            f"{max((a for a, _ in failures), default=0)}"
        )
        assert failures, "the outage was never felt by the gateway"
    # OpenViking's trouble is its own: the local provider never failed a commit.
    assert commit_failures(db, "local") == []
    ledgers = asyncio.run(check_store(db, run.accepted, providers=PROVIDERS))
    print(f"{len(ledgers)} sessions, {sum(len(ledger.entries) for ledger in ledgers)} entries")
    check_local_archive(db, ledgers)
    asyncio.run(check_openviking(openviking, account, ledgers, db))
    check_events(tmp_path / "events.jsonl")
