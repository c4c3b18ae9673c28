"""What the benchmarks of a real gateway process share: its config, its start, its memory.

A benchmark here runs `python -m sessiongate run --config FILE` as a child process
(the same interpreter, so the virtualenv's code), on a store the benchmark chose,
with the HTTP API on a free loopback port and the web page off. Its standard
output and error go to a log file next to the config, for when something fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lifecycle_support import machine


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One gateway's configuration file and where it serves."""

    path: Path
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def write_config(
    directory: Path,
    store_url: str,
    *,
    idle_after: str = "24h",
    lease_seconds: float | None = None,
) -> GatewayConfig:
    """A config file in `directory`: the store, a free port, idle reset, no hooks, no web page.

    `lease_seconds=None` keeps the default lease (`workers.lease_seconds`, 30 s).
    """
    directory.mkdir(parents=True, exist_ok=True)
    hooks = directory / "hooks"
    hooks.mkdir(exist_ok=True)
    port = free_port()
    workers = "" if lease_seconds is None else f"workers: {{lease_seconds: {lease_seconds:g}}}"
    path = directory / "config.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            store: {store_url}
            server: {{host: 127.0.0.1, port: {port}}}
            hooks_dir: {hooks}
            session_reset: {{mode: idle, idle_after: {idle_after}}}
            platforms: {{web: {{enabled: false}}}}
            log: {{level: warning}}
            """
        )
        + workers
        + "\n"
    )
    return GatewayConfig(path, port)


def spawn(config: GatewayConfig) -> subprocess.Popen[bytes]:
    """Start `sessiongate run` on `config`; its output is appended to `gateway.log`."""
    with (config.path.parent / "gateway.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sessiongate", "run", "--config", str(config.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


async def wait_http(
    config: GatewayConfig,
    proc: subprocess.Popen[bytes],
    *,
    within: float = 120.0,
    interval: float = 0.01,
) -> float:
    """Poll `GET /v1/models` until it answers; the `time.perf_counter()` of that answer."""
    deadline = time.perf_counter() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {proc.returncode}; see gateway.log")
            try:
                await client.get(f"{config.base_url}/v1/models")
            except httpx.TransportError:
                await asyncio.sleep(interval)
                continue
            return time.perf_counter()
    raise RuntimeError(f"the gateway did not answer within {within:.0f} s")


def stop(proc: subprocess.Popen[bytes], *, within: float = 60.0) -> int:
    """SIGTERM the gateway (a clean stop) and wait for it; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def memory_status(pid: int) -> dict[str, int]:
    """`VmRSS` and `VmHWM` (and `RssAnon`, `RssFile`) of process `pid`, in KiB."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile"}
    status: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as lines:
        for line in lines:
            name, _, value = line.partition(":")
            if name in wanted:
                status[name] = int(value.split()[0])
    return status


def threads(pid: int) -> int:
    """How many threads process `pid` has."""
    return len(os.listdir(f"/proc/{pid}/task"))


def machine_info(workdir: Path) -> dict[str, Any]:
    """`lifecycle_support.machine` plus the RAM and the online CPUs."""
    info = machine(workdir)
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    info["nproc"] = len(os.sched_getaffinity(0))
    return info
