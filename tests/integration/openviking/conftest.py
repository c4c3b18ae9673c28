"""One real OpenViking server (and its fake model) per test run; one account per test.

The server's venv is installed on first use (`scripts/openviking-venv`, cached).
When it cannot be installed or started, the tests are skipped on a developer
machine and FAIL in CI (CI=true), so CI can never go green without them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.openviking.fake_model import DIMENSION, FakeModel, ModelServer
from integration.openviking.server import ROOT_KEY, OpenVikingServer, ServerView, start_or_give_up
from sessiongate.memory.openviking import AuthMode, OpenVikingProvider, OpenVikingSettings

KEY_ENV = "SESSIONGATE_TEST_OPENVIKING_KEY"


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServer]:
    server = ModelServer(FakeModel())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openviking(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenVikingServer]:
    """The running server; tests that stop it must start it again before they end."""
    root = tmp_path_factory.mktemp("openviking")
    server = start_or_give_up(root, model_url=model_server.base_url, dimension=DIMENSION)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def model(model_server: ModelServer) -> Iterator[FakeModel]:
    """The fake model, answering normally again after each test."""
    yield model_server.model
    model_server.model.failing = False


@pytest.fixture
def account() -> str:
    """A fresh OpenViking account: tests never see each other's sessions or memories."""
    return f"acct-{uuid.uuid4().hex[:12]}"


def provider_settings(server: OpenVikingServer, account: str, **changes: Any) -> OpenVikingSettings:
    values: dict[str, Any] = {
        "endpoint": server.url,
        "auth": AuthMode.TRUSTED,
        "account": account,
        "key_env": KEY_ENV,
        "task_poll_interval": 0.25,
        "task_max_wait": 120.0,
        # Generous on a shared machine; the deadline itself is unit-tested.
        "recall_deadline": 10.0,
    }
    values.update(changes)
    return OpenVikingSettings(**values)


@pytest.fixture
async def provider(openviking: OpenVikingServer, account: str) -> AsyncIterator[OpenVikingProvider]:
    settings = provider_settings(openviking, account, max_batch=3)
    async with OpenVikingProvider(settings, environ={KEY_ENV: ROOT_KEY}) as opened:
        yield opened


@pytest.fixture
def view(openviking: OpenVikingServer, account: str) -> ServerView:
    return ServerView(openviking, account)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "sessiongate.db"
