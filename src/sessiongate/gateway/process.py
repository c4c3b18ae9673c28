"""One gateway process: the store, memory, hooks, agent, lifecycle, platforms and HTTP server.

Everything is built once from the frozen `Settings`. `serve` runs the outbox
workers, the timers sweeper, the platforms' receive loops and the HTTP server
until it is told to stop; then it stops taking messages, lets running turns
finish within the drain bound, drains in-flight jobs, and closes the store. A
stop is not an end: live sessions are still live at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from sessiongate.agent.base import Agent
from sessiongate.agent.factory import build_agent
from sessiongate.clock import Clock, SystemClock, system_random
from sessiongate.config import Settings
from sessiongate.errors import ConfigError
from sessiongate.gateway.core import Gateway
from sessiongate.hooks import events
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.hooks.problem import HookProblem
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle import sweeper, worker
from sessiongate.lifecycle.runtime import Lifecycle
from sessiongate.memory.recall import Recaller
from sessiongate.memory.registry import build_providers
from sessiongate.platforms.access import Access
from sessiongate.platforms.base import Platform
from sessiongate.store import default_store_url, open_store
from sessiongate.store.base import Store

log = logging.getLogger(__name__)


@dataclass
class GatewayProcess:
    """The parts of one running gateway; build it with `GatewayProcess.open`."""

    settings: Settings
    store: Store
    lifecycle: Lifecycle
    gateway: Gateway
    agent: Agent
    hooks: HookDispatcher
    hook_problems: list[HookProblem]
    access: Access
    platforms: list[Platform] = field(default_factory=list)
    # Operator pages on the same server; not chat platforms.
    surfaces: list[Platform] = field(default_factory=list)
    port: int | None = None

    @classmethod
    async def open(cls, settings: Settings, *, clock: Clock | None = None) -> GatewayProcess:
        """Open the store (migrating it) and build every part; `ConfigError` if one is wrong."""
        clock = clock or SystemClock()
        access = Access(settings.server.access_token(), settings.server.loopback)
        if not access.loopback and access.token is None:
            raise ConfigError(
                f"server.host {settings.server.host!r} is not loopback: set server.token_env "
                "(or server.token) so the web page and the APIs require a token"
            )
        store = await open_store(settings.store or default_store_url(), migrate=True)
        try:
            providers = build_providers(settings.memory.providers, store=store)
            hooks, problems = HookDispatcher.load(settings.hooks_directory())
            work = settings.workers
            lifecycle = Lifecycle(
                store,
                settings.lifecycle(),
                providers=providers,
                hooks=hooks,
                clock=clock,
                worker=worker.WorkerSettings(
                    concurrency=work.concurrency,
                    lane_slots=work.lane_slots,
                    lease_seconds=work.lease_seconds,
                    poll_seconds=work.poll_seconds,
                    drain_seconds=settings.gateway.drain_seconds,
                ),
                retention=settings.retention_policy(),
                sweeper=sweeper.SweeperSettings(
                    lease_seconds=work.lease_seconds,
                    poll_seconds=work.poll_seconds,
                    max_rate=work.catch_up_rate,
                ),
            )
            recaller = Recaller(
                lifecycle.providers,
                deadline=settings.memory.recall_deadline_ms / 1000,
                limit=settings.memory.recall_limit,
                clock=clock,
            )
            agent = build_agent(settings.agent)
            gateway = Gateway(
                lifecycle.engine,
                agent,
                recaller,
                hooks,
                settings=settings.gateway,
                clock=clock,
                ids=IdGenerator(clock, system_random()),
                owner=lifecycle.owner,
            )
            process = cls(settings, store, lifecycle, gateway, agent, hooks, problems, access)
            process.platforms = _platforms(process)
            process.surfaces = _surfaces(process)
        except BaseException:
            await store.close()
            raise
        return process

    def app(self) -> Starlette:
        """The HTTP server's application: every platform's routes."""
        routes: list[BaseRoute] = []
        for platform in [*self.platforms, *self.surfaces]:
            routes.extend(platform.routes())
        return Starlette(routes=routes)

    async def serve(self, stop: asyncio.Event, *, started: asyncio.Event | None = None) -> None:
        """Run until `stop` is set, then shut down cleanly (drain turns, then jobs)."""
        server = _Server(
            uvicorn.Config(
                self.app(),
                host=self.settings.server.host,
                port=self.settings.server.port,
                log_level="warning",
                lifespan="off",
                ws_max_size=self.settings.gateway.max_message_bytes * 2 + 4096,
                # Requests still open after the drain bound are cut, not waited on.
                timeout_graceful_shutdown=math.ceil(self.settings.gateway.drain_seconds) + 5,
            )
        )
        lifecycle_stop = asyncio.Event()
        async with AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            stack.push_async_callback(self.close)
            group.create_task(self.lifecycle.run(lifecycle_stop), name="lifecycle")
            serving = group.create_task(server.serve(), name="http")
            # uvicorn only exposes a `started` flag, no event to wait on.
            while not server.started and not serving.done():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            if serving.done():
                serving.result()  # the bind failed: surface why
            self.port = server.bound_port()
            for platform in self.platforms:
                group.create_task(platform.run(stop), name=f"platform:{platform.name}")
            await self._announce()
            if started is not None:
                started.set()
            await stop.wait()
            server.should_exit = True
            # Running turns get the drain bound to finish (then are recorded as
            # interrupted), so the requests waiting on them can complete.
            await asyncio.gather(serving, self.gateway.drain(self.settings.gateway.drain_seconds))
            lifecycle_stop.set()

    async def _announce(self) -> None:
        names = [platform.name for platform in self.platforms]
        event = events.gateway_startup(event_id=f"startup.{uuid.uuid4().hex}", platforms=names)
        await self.hooks.notify(event)
        log.info("gateway serving on %s:%s with %s", self.settings.server.host, self.port, names)

    async def close(self) -> None:
        """Close the agent and the store."""
        await self.agent.close()
        await self.store.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def bound_port(self) -> int | None:
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


def _platforms(process: GatewayProcess) -> list[Platform]:
    """The platforms the settings enable; each is a leaf over the gateway."""
    settings = process.settings.platforms
    chosen: list[Platform] = []
    if settings.api.enabled:
        from sessiongate.platforms.http_api import HttpApi

        chosen.append(HttpApi(process.gateway, process.access, settings.api))
    if settings.web.enabled:
        from sessiongate.platforms.webchat import WebChat

        chosen.append(WebChat(process.gateway, process.access, settings.web))
    if settings.telegram is not None and settings.telegram.enabled:
        from sessiongate.platforms.telegram import TelegramPlatform

        chosen.append(TelegramPlatform(process.gateway, settings.telegram))
    return chosen


def _surfaces(process: GatewayProcess) -> list[Platform]:
    """The operator surfaces over the store: /admin (always mounted, so that while it is
    off it says so and how to turn it on) and /metrics."""
    settings = process.settings.platforms
    chosen: list[Platform] = []
    from sessiongate.platforms.admin import Admin
    from sessiongate.platforms.metrics import Metrics

    providers, clock = tuple(process.lifecycle.providers), process.lifecycle.clock
    chosen.append(Admin(process.store, settings.admin, providers=providers, clock=clock))
    if settings.metrics.enabled:
        chosen.append(
            Metrics(
                process.store, process.access, settings.metrics, providers=providers, clock=clock
            )
        )
    return chosen
