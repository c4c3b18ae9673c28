"""Helpers of the hook tests: the call log handlers write, handler sources, sessions."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sessiongate.models import ChatType, Session

WriteHook = Callable[..., Path]


class CallLog:
    """The JSON-lines file recording handlers write: one line per call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def calls(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def hooks(self) -> list[str]:
        return [call["hook"] for call in self.calls()]


def recording_handler(log: CallLog, *, is_async: bool = False, body: str = "") -> str:
    """Source of a handler.py that logs each call, then runs `body` (indented code)."""
    header = "async def handle" if is_async else "def handle"
    return textwrap.dedent(
        f"""
        import json
        from pathlib import Path

        LOG = Path({str(log.path)!r})
        NAME = Path(__file__).parent.name

        {header}(event_type, context):
            with LOG.open("a") as f:
                f.write(json.dumps({{"hook": NAME, "event_type": event_type,
                                     "context": context}}) + "\\n")
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")


def make_session(**changes: Any) -> Session:
    """A session as the store would return it."""
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": "s-1",
        "key": "agent:main:telegram:dm:42",
        "platform": "telegram",
        "chat_id": "42",
        "chat_type": ChatType.DM,
        "created_at": at,
        "last_activity_at": at,
        "user_id": "u-7",
        "user_name": "Ada",
    }
    fields.update(changes)
    return Session(**fields)
