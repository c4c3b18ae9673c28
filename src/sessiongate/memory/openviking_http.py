"""The wire side of the OpenViking provider: identity headers, envelopes and errors.

OpenViking answers `{"status": "ok", "result": ...}` or
`{"status": "error", "error": {"code", "message"}}`. Every call here names what
it was doing (and for which session) so a failure says so. Transport errors,
timeouts, 5xx and UNAVAILABLE become `ProviderUnavailable` (the job retries);
invalid or unauthorised calls become `ProviderRejected` (a dead letter to fix
and redrive).

Auth modes:
- `dev`: no key; the account and user travel in `X-OpenViking-Account` and
  `X-OpenViking-User` (the server must run without a root key, on loopback).
- `trusted`: the root key in `X-API-Key` plus the account and user headers; the
  gateway owns tenancy. The recommended mode.
- `api_key`: the server ignores identity headers and knows the user by its key.
  The root key (or an admin key of the account) provisions one key per user:
  it registers the user with a seed derived from the root key, so the same
  user always gets the same key, in every replica and after every restart, and
  nothing has to be stored. The account must be dedicated to this gateway.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import httpx

from sessiongate.errors import ProviderRejected, ProviderUnavailable

ADMIN_USER = "sessiongate-admin"
_UNAVAILABLE_CODES = frozenset(
    {"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "UNKNOWN"}
)


class AuthMode(StrEnum):
    """How the gateway authenticates to OpenViking (see the module docstring)."""

    DEV = "dev"
    TRUSTED = "trusted"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Identity:
    """An OpenViking account and user: whose data a call reads or writes."""

    account: str
    user: str


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer whose error code the caller asked to handle itself."""

    result: Any
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None


class OpenVikingHTTP:
    """One connection pool to one OpenViking server, with the configured auth mode."""

    def __init__(
        self,
        endpoint: str,
        *,
        mode: AuthMode,
        key: str | None,
        timeout: httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._mode = mode
        # Kept out of every message and log line; only ever sent as a header.
        self._key = key
        self._user_keys: dict[Identity, str] = {}
        self._client = httpx.AsyncClient(
            base_url=endpoint.rstrip("/"), timeout=timeout, transport=transport
        )

    @property
    def endpoint(self) -> str:
        return str(self._client.base_url)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        identity: Identity,
        what: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        wire_timeout: httpx.Timeout | None = None,
        handle: frozenset[str] = frozenset(),
    ) -> Reply:
        """Make one call as `identity`; error codes in `handle` are returned, others raised."""
        for attempt in (1, 2):
            headers = await self._headers(identity, what=what)
            response = await self._send(method, path, what, headers, json, params, wire_timeout)
            if (
                response.status_code == 401
                and self._mode is AuthMode.API_KEY
                and attempt == 1
                and self._user_keys.pop(identity, None) is not None
            ):
                # The user's key was regenerated elsewhere (or the root key changed):
                # provision it again once.
                continue
            return self._reply(response, what, handle)
        raise AssertionError("unreachable")

    async def health(self) -> dict[str, Any]:
        """The server's `/health` answer (no auth needed)."""
        response = await self._send("GET", "/health", "checking health", {}, None, None, None)
        body = _body(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise ProviderUnavailable(
                f"OpenViking at {self.endpoint}: health check answered HTTP {response.status_code}"
            )
        return body

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        headers: Mapping[str, str],
        json: Any,
        params: Mapping[str, Any] | None,
        wire_timeout: httpx.Timeout | None,
    ) -> httpx.Response:
        try:
            return await self._client.request(
                method,
                path,
                headers=headers,
                json=json,
                params=params,
                timeout=wire_timeout if wire_timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"OpenViking at {self.endpoint}: {what} timed out ({type(exc).__name__}); "
                "the outcome is unknown"
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"OpenViking at {self.endpoint}: {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _reply(self, response: httpx.Response, what: str, handle: frozenset[str]) -> Reply:
        body = _body(response)
        envelope = body if isinstance(body, dict) else {}
        if response.is_success and envelope.get("status") != "error":
            if "status" not in envelope:
                raise ProviderUnavailable(
                    f"OpenViking at {self.endpoint}: {what} got an answer that is not an "
                    f"OpenViking envelope (HTTP {response.status_code})"
                )
            return Reply(envelope.get("result"))
        error = envelope.get("error")
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or f"HTTP_{response.status_code}")
        message = str(error.get("message") or response.reason_phrase or "no message")
        if code in handle:
            return Reply(None, code=code)
        problem = (
            f"OpenViking at {self.endpoint}: {what} failed with {code} "
            f"(HTTP {response.status_code}): {message}"
        )
        status = response.status_code
        if status >= 500 or status in (408, 429) or code in _UNAVAILABLE_CODES:
            raise ProviderUnavailable(problem)
        if status in (401, 403):
            problem += "; check the auth mode, the account and the key"
        raise ProviderRejected(problem)

    # -- identity --------------------------------------------------------------------

    async def _headers(self, identity: Identity, *, what: str) -> dict[str, str]:
        if self._mode is AuthMode.API_KEY:
            return {"X-API-Key": await self._user_key(identity, what=what)}
        headers = {
            "X-OpenViking-Account": identity.account,
            "X-OpenViking-User": identity.user,
        }
        if self._mode is AuthMode.TRUSTED and self._key:
            headers["X-API-Key"] = self._key
        return headers

    def _seed(self, account: str) -> str:
        assert self._key is not None
        message = f"sessiongate user keys:{account}".encode()
        return hmac.new(self._key.encode(), message, hashlib.sha256).hexdigest()

    async def _admin(self, method: str, path: str, what: str, body: Any) -> Reply:
        assert self._key is not None
        response = await self._send(method, path, what, {"X-API-Key": self._key}, body, None, None)
        return self._reply(response, what, frozenset({"ALREADY_EXISTS", "NOT_FOUND"}))

    async def _user_key(self, identity: Identity, *, what: str) -> str:
        """The user's own key (api_key mode), registering the user on first use."""
        cached = self._user_keys.get(identity)
        if cached is not None:
            return cached
        account, user = quote(identity.account, safe=""), quote(identity.user, safe="")
        seed = self._seed(identity.account)
        doing = f"registering user {identity.user!r} in account {identity.account!r} (for {what})"
        users = f"/api/v1/admin/accounts/{account}/users"
        register = {"user_id": identity.user, "role": "user", "seed": seed}
        reply = await self._admin("POST", users, doing, register)
        if reply.code == "NOT_FOUND":
            create = {"account_id": identity.account, "admin_user_id": ADMIN_USER, "seed": seed}
            created = await self._admin("POST", "/api/v1/admin/accounts", doing, create)
            if created.code == "NOT_FOUND":
                raise ProviderRejected(f"OpenViking at {self.endpoint}: {doing}: no admin route")
            reply = await self._admin("POST", users, doing, register)
        if reply.code == "ALREADY_EXISTS":
            # The seed makes the regenerated key the one the user already had.
            reply = await self._admin("POST", f"{users}/{user}/key", doing, {"seed": seed})
        key = reply.result.get("user_key") if isinstance(reply.result, dict) else None
        if not reply.ok or not isinstance(key, str) or not key:
            raise ProviderRejected(
                f"OpenViking at {self.endpoint}: {doing}: no user key in the answer ({reply.code})"
            )
        self._user_keys[identity] = key
        return key


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
