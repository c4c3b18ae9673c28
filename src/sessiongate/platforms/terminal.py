"""The terminal: `sessiongate chat`, a REPL against the local store (no server needed).

The outbox workers and the timers sweeper run beside the prompt, so what is said
here reaches memory and ends well exactly as it would through the gateway.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable

from sessiongate.gateway.core import Gateway
from sessiongate.gateway.message import Inbound
from sessiongate.models import ChatType, Source

ReadLine = Callable[[str], Awaitable[str | None]]
Write = Callable[[str], None]
EXIT_WORDS = frozenset({"/exit", "/quit"})


async def read_stdin(prompt: str) -> str | None:
    """One line from standard input (None at end of input), without blocking the loop."""
    try:
        return await asyncio.to_thread(input, prompt)
    except EOFError:
        return None


def terminal_source(user: str | None = None) -> Source:
    """The terminal's conversation: one DM lane per operating-system user."""
    name = user or getpass.getuser() or "terminal"
    return Source(
        platform="terminal", chat_id=name, chat_type=ChatType.DM, user_id=name, user_name=name
    )


async def repl(gateway: Gateway, source: Source, *, read: ReadLine, write: Write) -> int:
    """Talk until end of input or /exit; returns how many messages were handled."""
    session, entries = await gateway.conversation(source)
    if session is not None:
        write(f"continuing session {session.id} ({len(entries)} entries); /help lists commands")
    else:
        write("a new conversation; /help lists commands, /exit leaves")
    handled = 0
    while True:
        line = await read("you> ")
        if line is None or line.strip() in EXIT_WORDS:
            return handled
        if not line.strip():
            continue
        out = await gateway.handle(Inbound(source, line))
        handled += 1
        for text_line in out.full_text.splitlines() or [""]:
            write(f"agent> {text_line}")
