"""What the kill tests share: a scripted load, SIGKILLs, and the checks made from outside.

A scripted load (conversations over the HTTP API with `/new`, `/branch` and
`/compress`, idle expiry in seconds) runs against one `sessiongate run` process
on SQLite that is SIGKILLed `ROUNDS` times at random moments and started again.
An `Outage` optionally stops a server the gateway depends on (a memory
provider) in the middle of the load and starts it again, with the gateway
SIGKILLed at least once while the server is down.

The checks read only what the killed processes left behind: the store file (a
read-only connection and a fresh `Store`), and the hook's event log.

Sizes: `SESSIONGATE_KILL_CONVERSATIONS` (default 24) and
`SESSIONGATE_KILL_ROUNDS` (default 5); the full size is 200 conversations and
20 rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sessiongate.memory.local import transcript
from sessiongate.models import Entry, Role, Session
from sessiongate.store import open_store
from sessiongate.store.archive import StagedTurn

CONVERSATIONS = int(os.environ.get("SESSIONGATE_KILL_CONVERSATIONS", "24"))
ROUNDS = int(os.environ.get("SESSIONGATE_KILL_ROUNDS", "5"))
HOOK = """
import json
from pathlib import Path

def handle(event_type, context):
    with Path({log!r}).open("a") as out:
        line = {{"type": event_type, "event_id": context["event_id"],
                 "session_id": context.get("session_id")}}
        out.write(json.dumps(line) + "\\n")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configure(
    tmp_path: Path, port: int, *, providers: Mapping[str, Mapping[str, Any]] | None = None
) -> Path:
    """The gateway's configuration: SQLite, the recording hook, idle expiry of seconds.

    Leases are short (jobs and timers 2 s, conversations 3 s) so that what a killed
    process held is taken over within seconds, not the default 30.

    `providers` is the `memory.providers` section (default: the built-in local one).
    """
    hook = tmp_path / "hooks" / "recorder"
    hook.mkdir(parents=True)
    (hook / "HOOK.yaml").write_text("name: recorder\nevents: ['session:start', 'session:end']\n")
    (hook / "handler.py").write_text(HOOK.format(log=str(tmp_path / "events.jsonl")))
    memory = "" if providers is None else f"memory: {json.dumps({'providers': providers})}"
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            store: sqlite:///{tmp_path}/sg.db
            server: {{host: 127.0.0.1, port: {port}}}
            hooks_dir: {tmp_path / "hooks"}
            session_reset: {{mode: idle, idle_after: 4s}}
            workers: {{lease_seconds: 2, poll_seconds: 0.2}}
            gateway: {{lease_seconds: 3}}
            platforms: {{web: {{enabled: false}}}}
            """
        )
        + memory
        + "\n"
    )
    return config


def start(config: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """One `sessiongate run`; its log lines go to `gateway.log` next to the config."""
    with (config.parent / "gateway.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sessiongate", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, **(env or {})},
        )


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            assert proc.poll() is None, "the gateway exited at start"
            try:
                await client.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise AssertionError("the gateway did not start")


class Load:
    """Conversations that talk until told to stop; remembers what was accepted."""

    def __init__(self, port: int, rand: random.Random) -> None:
        self.url = f"http://127.0.0.1:{port}/api/v1/messages"
        self.rand = rand
        self.accepted: list[str] = []
        self.statuses: Counter[int] = Counter()
        # What the gateway answered to what it did not accept (for the report).
        self.refusals: Counter[str] = Counter()
        self.counter = 0

    def text(self, chat: str) -> str:
        roll = self.rand.random()
        if roll < 0.06:
            return "/new"
        if roll < 0.09:
            return "/branch"
        if roll < 0.11:
            return "/compress"
        self.counter += 1
        return f"{chat} message {self.counter}"

    async def talk(self, chat: str, stop: asyncio.Event) -> None:
        # Longer than a message may wait for its conversation's lease (60 s), so no
        # request is still in the gateway once its talker has stopped.
        async with httpx.AsyncClient(timeout=90) as client:
            while not stop.is_set():
                text = self.text(chat)
                body = {"chat_id": chat, "user_id": chat, "text": text}
                try:
                    response = await client.post(self.url, json=body)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # the gateway is down: try again later
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code != 200:
                    kind = "command" if text.startswith("/") else "message"
                    self.refusals[f"{response.status_code} {kind}: {response.text[:120]}"] += 1
                if response.status_code == 200 and not text.startswith("/"):
                    self.accepted.append(text)
                await asyncio.sleep(self.rand.random() * 0.05)


@dataclass
class Outage:
    """A server stopped `after` seconds into the load for `seconds`, then started again.

    It counts as down from the moment its stop returned until its start returned
    (a healthy server again), so it is down somewhat longer than `seconds`. The
    kill loop keeps killing the gateway until it has killed it once after the
    outage (while the gateway catches up), and counts the kills that fell while
    the server was down and after.
    """

    stop: Callable[[], None]
    start: Callable[[], None]
    seconds: float
    after: float = 3.0
    down: bool = False
    over: bool = False
    kills: int = 0
    kills_after: int = 0
    down_seconds: float = 0.0

    async def run(self) -> None:
        await asyncio.sleep(self.after)
        await asyncio.to_thread(self.stop)
        began = time.monotonic()
        self.down = True
        await asyncio.sleep(self.seconds)
        await asyncio.to_thread(self.start)
        self.down = False
        self.down_seconds = time.monotonic() - began
        self.over = True


@dataclass
class Run:
    """What a load run left for the checks."""

    accepted: list[str]
    kills: int
    statuses: Counter[int]
    refusals: Counter[str]
    elapsed: dict[str, float] = field(default_factory=dict)


async def run_load(
    config: Path,
    port: int,
    seed: int,
    *,
    env: Mapping[str, str] | None = None,
    outage: Outage | None = None,
    conversations: int = CONVERSATIONS,
    settle_seconds: float = 240.0,
) -> Run:
    """Talk, SIGKILL and restart `ROUNDS` times (and through an outage), then settle.

    Settled: idle expiry ended every live session and the workers finished every
    job, so every session is finalized; then the gateway is stopped with SIGTERM.
    """
    began = time.monotonic()
    rand = random.Random(seed)
    load = Load(port, rand)
    proc = start(config, env)
    try:
        await wait_ready(port, proc)
        stop = asyncio.Event()
        talkers = [asyncio.create_task(load.talk(f"chat-{n}", stop)) for n in range(conversations)]
        outage_task = None if outage is None else asyncio.create_task(outage.run())
        kills = 0
        try:
            while kills < ROUNDS or (outage is not None and outage.kills_after < 1):
                await asyncio.sleep(0.5 + rand.random() * 1.5)
                if outage_task is not None and outage_task.done():
                    await outage_task  # an outage that failed (no server start) fails here
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                if outage is not None and outage.down:
                    outage.kills += 1
                elif outage is not None and outage.over:
                    outage.kills_after += 1
                proc = start(config, env)
                await wait_ready(port, proc)
            await asyncio.sleep(1)
        finally:
            stop.set()
            await asyncio.gather(*talkers)
            if outage_task is not None:
                await outage_task
        loaded = time.monotonic()
        await wait_settled(config.parent / "sg.db", within=settle_seconds)
        settled = time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    elapsed = {"load": loaded - began, "settle": settled - loaded}
    return Run(load.accepted, kills, load.statuses, load.refusals, elapsed)


async def wait_settled(db: Path, *, within: float) -> None:
    """Wait until every session is finalized, reading the file while the gateway writes.

    A plain read-only connection: in WAL mode reads never wait for the writer.
    """
    deadline = time.monotonic() + within
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT state, count(*) FROM sessions GROUP BY state").fetchall()
        conn.close()
        states = {str(state): int(n) for state, n in rows}
        if states and set(states) == {"finalized"}:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"sessions did not all end well in {within:.0f} s: {states}")


@dataclass(frozen=True)
class Ledger:
    """One session and its ledger, as the store holds them after the run."""

    session: Session
    entries: list[Entry]


async def check_store(
    db: Path, accepted: Sequence[str], providers: Sequence[str] = ("local",)
) -> list[Ledger]:
    """Ledgers dense, every accepted message in one, each provider's cursor at the end.

    Returns every session with its ledger, for the providers' own checks.
    """
    store = await open_store(f"sqlite:///{db}")
    try:
        sessions = await store.list_sessions(limit=100_000)
        ledgers: list[Ledger] = []
        stored: Counter[str] = Counter()
        for session in sessions:
            entries = await store.entries(session.id)
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
            assert len(entries) == session.turn_count, session.id
            stored.update(e.text for e in entries if e.role == "user")
            if session.turn_count:
                cursors = {c.provider: c for c in await store.cursors(session.id)}
                assert sorted(cursors) == sorted(providers), session.id
                for cursor in cursors.values():
                    reached = (cursor.delivered_seq, cursor.committed_seq)
                    assert reached == (session.turn_count,) * 2, (session.id, cursor)
            ledgers.append(Ledger(session, entries))
        missing = [text for text in accepted if stored[text] == 0]
        assert missing == []
        assert await store.dead_letters() == []
        return ledgers
    finally:
        await store.close()


def check_local_archive(db: Path, ledgers: Sequence[Ledger]) -> None:
    """What the local provider archived: every turn of every session exactly once.

    Each session's archives are its commit epochs 1..n, whose ranges tile its
    ledger from seq 1 to its last, each holding exactly the transcript of its
    range; nothing is left staged, and nothing is archived for unknown sessions.
    """
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT session_id, epoch, first_seq, last_seq, text FROM memory_items"
            " WHERE kind = 'archive' ORDER BY session_id, epoch"
        ).fetchall()
        staged = conn.execute("SELECT count(*) FROM memory_staged").fetchone()[0]
    conn.close()
    archives: dict[str, list[tuple[int, int, int, str]]] = {}
    for session_id, epoch, first, last, text in rows:
        archives.setdefault(str(session_id), []).append((epoch, first, last, text))
    assert staged == 0
    known = {ledger.session.id for ledger in ledgers}
    assert set(archives) <= known, sorted(set(archives) - known)
    for ledger in ledgers:
        held = archives.get(ledger.session.id, [])
        assert [epoch for epoch, *_ in held] == list(range(1, len(held) + 1))
        firsts = [first for _, first, _, _ in held]
        assert firsts == [1, *(last + 1 for _, _, last, _ in held)][: len(held)], held
        assert (held[-1][2] if held else 0) == ledger.session.turn_count, ledger.session.id
        for _, first, last, text in held:
            turns = [
                StagedTurn(e.seq, e.role, e.text, e.created_at)
                for e in ledger.entries[first - 1 : last]
            ]
            assert text == transcript(turns), (ledger.session.id, first, last)


def check_events(log: Path) -> None:
    events = {e["event_id"]: e for e in map(json.loads, log.read_text().splitlines())}
    starts = Counter(e["session_id"] for e in events.values() if e["type"] == "session:start")
    ends = Counter(e["session_id"] for e in events.values() if e["type"] == "session:end")
    assert set(starts) == set(ends)
    assert set(starts.values()) == {1}
    assert set(ends.values()) == {1}


def said(entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """The entries as (role, text), user entries as the user's and every other as the agent's."""
    return [("user" if e.role is Role.USER else "assistant", e.text) for e in entries]
