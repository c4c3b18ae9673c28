"""The real OpenViking server for the integration tests: install, configure, start, stop.

OpenViking (AGPL-3.0) runs only as a separate process from its own cached venv,
installed by `scripts/openviking-venv` (the same script CI runs). The server
gets a temp HOME and workspace, a free loopback port, trusted auth with a
root key, and an `ov.conf` pointing its embedding and extraction models at the
fake model server of these tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

OPENVIKING_VERSION = "0.5.2"
REPO = Path(__file__).resolve().parents[3]
INSTALLER = REPO / "scripts" / "openviking-venv"
ROOT_KEY = "sessiongate-test-root-key"


def venv_path() -> Path:
    """Where the OpenViking venv is cached (`SESSIONGATE_OPENVIKING_VENV` overrides)."""
    configured = os.environ.get("SESSIONGATE_OPENVIKING_VENV")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "sessiongate" / f"openviking-{OPENVIKING_VERSION}"


def ensure_installed() -> Path:
    """The `openviking-server` executable, installing the venv first if it is missing."""
    venv = venv_path()
    executable = venv / "bin" / "openviking-server"
    if executable.exists():
        return executable
    env = dict(os.environ, SESSIONGATE_OPENVIKING_VENV=str(venv))
    result = subprocess.run(
        [str(INSTALLER)], env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0 or not executable.exists():
        tail = (result.stderr or result.stdout)[-2000:]
        raise RuntimeError(f"installing openviking=={OPENVIKING_VERSION} failed: {tail}")
    return executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ov_conf(*, port: int, workspace: Path, model_url: str, dimension: int) -> dict[str, Any]:
    """The server's configuration: everything local, models at the fake."""
    return {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "auth_mode": "trusted",
            "root_api_key": ROOT_KEY,
        },
        "storage": {"workspace": str(workspace)},
        "embedding": {
            "dense": {
                "provider": "openai",
                "api_base": model_url,
                "api_key": "fake",
                "model": "fake-embedding",
                "dimension": dimension,
                "input": "text",
            }
        },
        "vlm": {
            "provider": "openai",
            "api_base": model_url,
            "api_key": "fake",
            "model": "fake-chat",
            "max_retries": 0,
        },
        "memory": {"extraction_output_format": "json"},
    }


class OpenVikingServer:
    """One OpenViking server process; it can be stopped and started again on its workspace."""

    def __init__(self, executable: Path, root: Path, *, model_url: str, dimension: int) -> None:
        self.executable = executable
        self.root = root
        self.port = free_port()
        self.workspace = root / "workspace"
        self.home = root / "home"
        self.config = root / "ov.conf"
        self.log = root / "server.log"
        self.home.mkdir(parents=True, exist_ok=True)
        self.workspace.mkdir(parents=True, exist_ok=True)
        conf = ov_conf(
            port=self.port, workspace=self.workspace, model_url=model_url, dimension=dimension
        )
        self.config.write_text(json.dumps(conf, indent=2))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until `GET /health` says it is healthy."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("OPENAI_", "OPENVIKING_"))
        }
        env.update(
            HOME=str(self.home),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.executable), "--config", str(self.config)],
                env=env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"openviking-server exited with {self._process.returncode}: {self.tail()}"
                )
            if self._healthy():
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"openviking-server was not healthy after {timeout:.0f} s: {self.tail()}"
        )

    def _healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("healthy") is True

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, and wait for the process to exit (SIGKILL only if it hangs)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ServerView:
    """What the tests read from the server besides the provider's own calls."""

    def __init__(self, server: OpenVikingServer, account: str) -> None:
        self._server = server
        self._account = account

    def _headers(self, user: str) -> dict[str, str]:
        return {
            "X-API-Key": ROOT_KEY,
            "X-OpenViking-Account": self._account,
            "X-OpenViking-User": user,
        }

    async def _get(self, path: str, user: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self._server.url, timeout=60) as client:
            response = await client.get(path, headers=self._headers(user), params=params)
        response.raise_for_status()
        return response.json()["result"]

    async def commit_tasks(self, user: str, session_id: str) -> list[dict[str, Any]]:
        """The session's commit tasks, oldest first."""
        tasks: list[dict[str, Any]] = await self._get(
            "/api/v1/tasks", user, task_type="session_commit", resource_id=session_id
        )
        return sorted(tasks, key=lambda task: float(task["created_at"]))

    async def wait_processed(self, user: str) -> None:
        """Wait until the server's queues (vector indexing included) are empty."""
        async with httpx.AsyncClient(base_url=self._server.url, timeout=120) as client:
            response = await client.post(
                "/api/v1/system/wait", headers=self._headers(user), json={}
            )
        response.raise_for_status()


def start_or_give_up(root: Path, *, model_url: str, dimension: int) -> OpenVikingServer:
    """A started server, installed first if need be; or skip the test, FAIL it in CI.

    When the server cannot be installed or started, tests that need it are skipped on a
    developer machine and fail when `CI=true`, so CI can never go green without them.
    """
    try:
        server = OpenVikingServer(
            ensure_installed(), root, model_url=model_url, dimension=dimension
        )
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        message = f"the OpenViking server could not be installed or started: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: OpenViking tests must run)")
        pytest.skip(message)
    return server
