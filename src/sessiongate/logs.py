"""Logging: human-readable lines or JSON, one line per event, naming the session.

The session a log line is about is carried in a context variable that the
gateway sets while it handles a message and the worker sets while it runs a
job, so every line logged underneath names it — also lines from libraries and
from code that does not know which session it works for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

_session: ContextVar[str | None] = ContextVar("sessiongate_session", default=None)

LogFormat = Literal["text", "json"]


@contextlib.contextmanager
def about_session(session_id: str | None) -> Iterator[None]:
    """Name `session_id` on every log line written inside this block."""
    token = _session.set(session_id)
    try:
        yield
    finally:
        _session.reset(token)


class SessionFilter(logging.Filter):
    """Adds `session_id` (from `about_session`) to records that do not carry one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "session_id", None) is None:
            record.session_id = _session.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, session_id, error."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "session_id": getattr(record, "session_id", None),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger [session] message`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(session)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        session = getattr(record, "session_id", None)
        record.session = f" [{session}]" if session else ""
        return super().format(record)


def configure_logging(fmt: LogFormat = "text", level: str = "info") -> None:
    """Send sessiongate's (and its libraries') logs to standard error in `fmt`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SessionFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's access log would be one line per HTTP request, without a session.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
