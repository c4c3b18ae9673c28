"""The real OpenViking server (and its fake model) for the kill tests of this directory.

Module-scoped, so the server runs only while the kill tests that need it run.
As in `tests/integration/openviking/`: when the server cannot be installed or
started, the tests are skipped on a developer machine and FAIL in CI (CI=true).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration.openviking.fake_model import DIMENSION, FakeModel, ModelServer
from integration.openviking.server import OpenVikingServer, start_or_give_up


@pytest.fixture(scope="module")
def openviking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenVikingServer]:
    """A running OpenViking server; a test that stops it must start it again."""
    model = ModelServer(FakeModel())
    model.start()
    try:
        root = tmp_path_factory.mktemp("openviking")
        server = start_or_give_up(root, model_url=model.base_url, dimension=DIMENSION)
        try:
            yield server
        finally:
            server.stop()
    finally:
        model.stop()
