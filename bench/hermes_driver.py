"""Turn ingest on the Hermes gateway's own session store, for side-by-side figures.

Runs under a separate virtualenv holding `hermes-agent` (never imported into
sessiongate's environment); `bench/turn_ingest.py` starts it as a subprocess
and reads one JSON document from its standard output.

One turn is what the Hermes gateway does for an inbound message and its reply:
`SessionStore.get_or_create_session(source)` then two `append_to_transcript`
calls (the user message, the assistant reply), through the gateway's own
`AsyncSessionStore` wrapper (each call offloaded with `asyncio.to_thread`).

Seeding: the live sessions are created with the real `get_or_create_session`,
but with the whole-index rewrite (`_save_entries`) deferred to one final write,
because the store rewrites its whole routing index on every call, which would
make seeding quadratic in the number of sessions. The timed turns run with the
store untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import random
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

TEXT_USER = "what is the weather like in Lisbon tomorrow afternoon?"
TEXT_ASSISTANT = "Tomorrow afternoon in Lisbon: sunny, 24 °C, light wind from the north-west."


class HermesHarness:
    """A Hermes `SessionStore` in a private HERMES_HOME, with sources by index."""

    def __init__(self, home: Path) -> None:
        # Hermes resolves its state.db path from HERMES_HOME at import time.
        os.environ["HERMES_HOME"] = str(home)
        session_mod: Any = importlib.import_module("gateway.session")
        config_mod: Any = importlib.import_module("gateway.config")
        self._session_mod = session_mod
        self._platform = config_mod.Platform.TELEGRAM
        config = config_mod.GatewayConfig(sessions_dir=home / "sessions")
        self.store: Any = session_mod.SessionStore(home / "sessions", config)
        self.async_store: Any = session_mod.AsyncSessionStore(self.store)
        self.seeded = 0

    def source(self, index: int) -> Any:
        """The source of chat number `index` (a Telegram DM)."""
        chat = str(100_000_000 + index)
        return self._session_mod.SessionSource(
            platform=self._platform,
            chat_id=chat,
            chat_type="dm",
            user_id=chat,
            user_name=f"user{index}",
        )

    def seed_to(self, count: int) -> float:
        """Create sessions until `count` exist; return the seconds it took."""
        started = time.perf_counter()
        save = self.store._save_entries
        self.store._save_entries = lambda: None
        try:
            for index in range(self.seeded, count):
                self.store.get_or_create_session(self.source(index))
        finally:
            self.store._save_entries = save
        self.store._save_entries()
        self.seeded = max(self.seeded, count)
        return time.perf_counter() - started

    async def turn(self, index: int) -> None:
        """One routed message and its reply, as the gateway records them."""
        entry = await self.async_store.get_or_create_session(self.source(index))
        now = time.time()
        await self.async_store.append_to_transcript(
            entry.session_id, {"role": "user", "content": TEXT_USER, "timestamp": now}
        )
        await self.async_store.append_to_transcript(
            entry.session_id,
            {"role": "assistant", "content": TEXT_ASSISTANT, "timestamp": time.time()},
        )


async def sequential(harness: HermesHarness, turns: int, rng: random.Random) -> list[float]:
    """Latencies in seconds of `turns` turns, one after another, on random live sessions."""
    latencies: list[float] = []
    for _ in range(turns):
        index = rng.randrange(harness.seeded)
        started = time.perf_counter()
        await harness.turn(index)
        latencies.append(time.perf_counter() - started)
    return latencies


async def concurrent(harness: HermesHarness, turns: int, chats: int) -> dict[str, float]:
    """`turns` turns spread over `chats` concurrent chats; wall time and turns/s."""
    remaining = [turns]

    async def chat(index: int) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await harness.turn(index)

    started = time.perf_counter()
    await asyncio.gather(*(chat(i % harness.seeded) for i in range(chats)))
    seconds = time.perf_counter() - started
    return {"turns": turns, "seconds": seconds, "turns_per_s": turns / seconds}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure at each requested number of live sessions, growing one store."""
    rng = random.Random(args.seed)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hermes-bench-", dir=args.dir) as home:
        harness = HermesHarness(Path(home))
        for count in args.sessions:
            seed_seconds = harness.seed_to(count)
            latencies = await sequential(harness, args.turns, rng)
            conc = await concurrent(harness, args.concurrent_turns, args.concurrency)
            results.append(
                {
                    "sessions": count,
                    "seed_seconds": seed_seconds,
                    "latencies_s": latencies,
                    "concurrent": conc,
                }
            )
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", default="1000,3000", help="comma-separated counts")
    parser.add_argument("--turns", type=int, default=100, help="sequential turns per count")
    parser.add_argument("--concurrent-turns", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to put the temporary HERMES_HOME")
    args = parser.parse_args(argv)
    args.sessions = [int(part) for part in args.sessions.split(",") if part]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Hermes prints warnings on standard output; keep it for the JSON document.
    with contextlib.redirect_stdout(sys.stderr):
        results = asyncio.run(run(args))
    version = metadata.version("hermes-agent")
    json.dump({"hermes_agent": version, "results": results}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
