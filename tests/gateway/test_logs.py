"""Log lines name the session they are about, as text or JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.conftest import GatewayFactory, say
from gateway.test_busy import BrokenAgent
from sessiongate.gateway.process import GatewayProcess
from sessiongate.logs import JsonFormatter, SessionFilter, TextFormatter, about_session


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SessionFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_an_agent_failure_is_logged_with_its_session(
    process: GatewayProcess, gateway_with: GatewayFactory, captured: io.StringIO
) -> None:
    out = await say(gateway_with(BrokenAgent()), "hello")
    assert out.session is not None
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    [failure] = [line for line in lines if "failed on session" in line["message"]]
    assert failure["session_id"] == out.session.id
    assert failure["level"] == "error"
    assert "model exploded" in failure["error"]


def test_text_lines_name_the_session() -> None:
    record = logging.LogRecord("sessiongate.x", logging.INFO, __file__, 1, "hi %s", ("x",), None)
    with about_session("01ABC"):
        SessionFilter().filter(record)
    assert TextFormatter().format(record).endswith("INFO sessiongate.x [01ABC] hi x")
    outside = logging.LogRecord("sessiongate.x", logging.INFO, __file__, 1, "hi", (), None)
    SessionFilter().filter(outside)
    assert json.loads(JsonFormatter().format(outside))["session_id"] is None
