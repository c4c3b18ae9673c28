"""The real OpenViking server (and its fake model) for the kill tests of this directory.

Module-scoped, so the server runs only while the kill tests that need it run.
As in `tests/integration/openviking/`: when the server cannot be installed or
started, the tests are skipped on a developer machine and FAIL in CI (CI=true).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from integration.openviking.fake_model import DIMENSION, FakeModel, ModelServer
from integration.openviking.server import OpenVikingServer, ensure_installed


@pytest.fixture(scope="module")
def openviking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenVikingServer]:
    """A running OpenViking server; a test that stops it must start it again."""
    model = ModelServer(FakeModel())
    model.start()
    try:
        root = tmp_path_factory.mktemp("openviking")
        try:
            server = OpenVikingServer(
                ensure_installed(), root, model_url=model.base_url, dimension=DIMENSION
            )
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            message = f"the OpenViking server could not be installed or started: {exc}"
            if os.environ.get("CI") == "true":
                pytest.fail(message + " (CI=true: OpenViking tests must run)")
            pytest.skip(message)
        try:
            yield server
        finally:
            server.stop()
    finally:
        model.stop()
