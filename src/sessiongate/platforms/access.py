"""Who may talk to the gateway over HTTP: open on loopback, a token otherwise."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import HTTPConnection

TOKEN_COOKIE = "sessiongate_token"


@dataclass(frozen=True, slots=True)
class Access:
    """The web page, the HTTP APIs and the terminal need `token` unless bound to loopback."""

    token: str | None
    loopback: bool

    @property
    def required(self) -> bool:
        return not self.loopback or self.token is not None

    def check(self, token: str | None) -> bool:
        """Whether `token` (None: none presented) lets a client in."""
        if not self.required:
            return True
        if self.token is None or token is None:
            return False
        return hmac.compare_digest(token.encode(), self.token.encode())

    def allows(self, connection: HTTPConnection) -> bool:
        """Check a request or WebSocket: bearer header, `token` query parameter or cookie."""
        header = connection.headers.get("authorization", "")
        presented = None
        if header.lower().startswith("bearer "):
            presented = header[7:].strip()
        presented = (
            presented
            or connection.query_params.get("token")
            or connection.cookies.get(TOKEN_COOKIE)
        )
        return self.check(presented)
