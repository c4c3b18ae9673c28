"""What a platform adapter offers the gateway process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from starlette.routing import BaseRoute


class Platform(Protocol):
    """A chat platform: HTTP routes on the gateway's server and/or a receive loop."""

    @property
    def name(self) -> str:
        """The platform's name, as in session keys and events."""
        ...

    def routes(self) -> Sequence[BaseRoute]:
        """Routes mounted on the gateway's HTTP server (none for pure pollers)."""
        ...

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until `stop` is set; return at once if the routes do all the work."""
        ...
