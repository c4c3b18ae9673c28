"""`sessiongate run` and `sessiongate chat` as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

HOOK = """
import json
from pathlib import Path

def handle(event_type, context):
    with Path({log!r}).open("a") as out:
        record = {{"type": event_type, "session_id": context.get("session_id")}}
        out.write(json.dumps(record) + "\\n")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configure(tmp_path: Path) -> tuple[Path, int, Path]:
    port = free_port()
    log = tmp_path / "events.jsonl"
    hook = tmp_path / "hooks" / "recorder"
    hook.mkdir(parents=True)
    (hook / "HOOK.yaml").write_text("name: recorder\nevents: ['session:*', 'agent:*']\n")
    (hook / "handler.py").write_text(HOOK.format(log=str(log)))
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            store: sqlite:///{tmp_path}/sg.db
            server: {{host: 127.0.0.1, port: {port}}}
            hooks_dir: {tmp_path}/hooks
            """
        )
    )
    return config, port, log


def start(config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sessiongate", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_ready(port: int, proc: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not start")


def events(log: Path) -> list[dict[str, str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    return output


def post(port: int, text: str) -> dict[str, object]:
    body = {"chat_id": "me", "user_id": "me", "text": text}
    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/messages", json=body, timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def test_run_serves_survives_a_restart_and_ends_sessions_well(tmp_path: Path) -> None:
    config, port, log = configure(tmp_path)
    proc = start(config)
    try:
        wait_ready(port, proc)
        first = post(port, "hello, remember the lighthouse")
        new = post(port, "/new")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            e["type"] == "session:end" for e in events(log)
        ):
            time.sleep(0.1)
        ended = [e for e in events(log) if e["type"] == "session:end"]
        assert [e["session_id"] for e in ended] == [first["session_id"]]
        live = post(port, "still here")
        assert live["session_id"] == new["session_id"]
    finally:
        output = stop(proc)
    assert "serving on" in output
    # A restart is not an end: the live session continues.
    proc = start(config)
    try:
        wait_ready(port, proc)
        again = post(port, "after the restart")
        assert again["session_id"] == new["session_id"]
    finally:
        stop(proc)
    types = [e["type"] for e in events(log)]
    assert types.count("session:start") == 2
    assert types.count("session:end") == 1
    assert types.count("agent:start") == types.count("agent:end") == 3


def test_run_refuses_a_bad_config_clearly(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server: {prot: 8420}\n")
    result = subprocess.run(
        [sys.executable, "-m", "sessiongate", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "unknown key 'server.prot'; did you mean 'port'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_chat_talks_in_the_terminal(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/sg.db"
    command = [sys.executable, "-m", "sessiongate", "chat", "--store", store, "--user", "ann"]
    result = subprocess.run(
        command,
        input="hello [bold]there[/]\n/status\n/exit\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "agent> (offline agent) You said: hello [bold]there[/]" in result.stdout
    assert "memory local:" in result.stdout
    again = subprocess.run(command, input="", capture_output=True, text=True, timeout=60)
    assert "continuing session" in again.stdout
