"""A gateway over a real store (SQLite by default, Postgres where parametrized)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sessiongate.agent.base import Agent
from sessiongate.clock import SystemClock, system_random
from sessiongate.config import GatewaySettings, parse_settings
from sessiongate.gateway.core import Gateway
from sessiongate.gateway.message import Inbound, Outbound
from sessiongate.gateway.process import GatewayProcess
from sessiongate.ids import IdGenerator
from sessiongate.memory.recall import Recaller
from sessiongate.models import ChatType, Source

ALICE = Source(platform="api", chat_id="c-alice", chat_type=ChatType.DM, user_id="alice")
BOB = Source(platform="api", chat_id="c-bob", chat_type=ChatType.DM, user_id="bob")


def settings_for(url: str, tmp_path: Path, **extra: Any) -> Any:
    # The web page has its own tests; these talk to the gateway directly.
    values = {
        "store": url,
        "server": {"port": 0},
        "hooks_dir": str(tmp_path / "no-hooks"),
        "platforms": {"web": {"enabled": False}},
        **extra,
    }
    return parse_settings(values)


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    opened = await GatewayProcess.open(settings_for(f"sqlite:///{tmp_path}/sg.db", tmp_path))
    try:
        yield opened
    finally:
        await opened.close()


async def say(gateway: Gateway, text: str, source: Source = ALICE) -> Outbound:
    return await gateway.handle(Inbound(source, text))


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateway_with(process: GatewayProcess) -> GatewayFactory:
    """A gateway over `process`'s engine with another agent and busy policy.

    Gateways built with different `owner`s stand for replicas sharing the store.
    """

    def build(agent: Agent, *, owner: str = "gateway", **settings: Any) -> Gateway:
        return Gateway(
            process.lifecycle.engine,
            agent,
            Recaller(process.lifecycle.providers),
            process.hooks,
            settings=GatewaySettings(**settings),
            clock=SystemClock(),
            ids=IdGenerator(SystemClock(), system_random()),
            owner=owner,
        )

    return build
