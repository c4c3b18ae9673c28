"""A whole gateway serving on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessiongate.config import Settings
from sessiongate.gateway.process import GatewayProcess


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[GatewayProcess]:
    """Open and serve a gateway (use `server: {port: 0}`); stopped cleanly on exit.

    `process.port` is the port it listens on.
    """
    process = await GatewayProcess.open(settings)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(process.serve(stop, started=started))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiter.cancel()
        stop.set()
        await task  # raises why it did not start
        raise RuntimeError("the gateway did not start within 30 s")
    try:
        yield process
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
