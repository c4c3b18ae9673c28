"""The OpenViking memory provider: sessions, commits and recall over OpenViking's HTTP API.

OpenViking (run as its own server; nothing of it is imported here) keeps one
session per sessiongate session, under the OpenViking user of the session's
user. Ledger entries become session messages; a commit archives the live
messages and extracts long-term memories in a background task, which this
provider polls to its end.

OpenViking's message add has no idempotency key, so the gateway reconciles
through `uncommitted_count`: the session's live `message_count`, i.e. the
messages appended since its last commit. A failed extraction has already
archived (dropped) the live messages; the provider reports it as
`failed_after_accept` and the gateway replays the epoch from the ledger.

Users map to OpenViking user ids by `openviking_user`; every call about a user's
data is made as that user, so OpenViking itself keeps users apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from sessiongate.errors import ConfigError, InvalidInput, ProviderUnavailable
from sessiongate.memory.openviking_http import AuthMode, Identity, OpenVikingHTTP
from sessiongate.memory.provider import CommitOutcome, ProviderSession, RecallHit, RecallScope
from sessiongate.models import Entry, Role

log = logging.getLogger(__name__)

__all__ = ["AuthMode", "OpenVikingProvider", "OpenVikingSettings", "openviking_user"]

MAX_BATCH = 100  # what OpenViking's messages/batch accepts
_SESSIONS = "/api/v1/sessions"
_ENSURED_CACHE = 10_000
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DONE = frozenset({"completed"})
_FAILED = frozenset({"failed", "cancelled"})


def openviking_user(user_id: str | None, *, platform: str = "", chat_id: str = "") -> str:
    """The OpenViking user id of a sessiongate user (one-to-one, stable).

    - An id of letters, digits, `_`, `.` and `-` that starts with a letter or a
      digit (at most 64 characters) is used as it is: `u-42` -> `u-42`.
    - Any other id (an e-mail, spaces, a leading `_`, longer ids) becomes
      `_u_<readable part>_<20 hex of its SHA-256>`: it starts with `_`, so it never
      equals an id used as it is, and the hash keeps different ids apart.
    - A session without a user (a channel) belongs to its chat:
      `_chat_<20 hex of SHA-256 of platform and chat id>`.
    """
    if user_id is None:
        digest = hashlib.sha256(f"{platform}\0{chat_id}".encode()).hexdigest()[:20]
        return f"_chat_{digest}"
    if _IDENTIFIER.fullmatch(user_id):
        return user_id
    digest = hashlib.sha256(user_id.encode()).hexdigest()[:20]
    readable = _UNSAFE.sub("-", user_id).strip("-._")[:32]
    return f"_u_{readable}_{digest}" if readable else f"_u_{digest}"


@dataclass(frozen=True, slots=True)
class OpenVikingSettings:
    """How to reach one OpenViking server and as whom. Durations are in seconds.

    The key (the root key in `trusted` and `api_key` modes) is never stored here:
    `key_env` names the environment variable that holds it.
    """

    endpoint: str = "http://127.0.0.1:1933"
    auth: AuthMode = AuthMode.DEV
    account: str = "sessiongate"
    key_env: str = "OPENVIKING_ROOT_KEY"
    # The peer id of assistant messages: who said what, for extraction.
    assistant_peer: str = "sessiongate"
    name: str = "openviking"
    max_batch: int = MAX_BATCH
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    task_poll_interval: float = 1.0
    # Extraction takes ≈10-25 s; past this wait the commit is retried later and
    # resumes waiting for the same task.
    task_max_wait: float = 180.0
    recall_deadline: float = 0.5

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "auth", AuthMode(self.auth))
        except ValueError:
            allowed = ", ".join(mode.value for mode in AuthMode)
            raise ConfigError(f"openviking auth {self.auth!r} is not one of {allowed}") from None
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"openviking endpoint must be an http(s) URL, got {self.endpoint!r}")
        if not _IDENTIFIER.fullmatch(self.account):
            raise ConfigError(
                f"openviking account {self.account!r} must be letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        if not _IDENTIFIER.fullmatch(self.assistant_peer):
            raise ConfigError(f"openviking assistant_peer {self.assistant_peer!r} is not an id")
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise ConfigError(f"openviking max_batch must be 1..{MAX_BATCH}, got {self.max_batch}")
        for field in (
            "connect_timeout",
            "request_timeout",
            "task_poll_interval",
            "task_max_wait",
            "recall_deadline",
        ):
            if not getattr(self, field) > 0:
                raise ConfigError(f"openviking {field} must be > 0 seconds")

    def key(self, environ: Mapping[str, str]) -> str | None:
        """The key from the environment; `ConfigError` if the mode needs one and none is set."""
        if self.auth is AuthMode.DEV:
            return None
        value = environ.get(self.key_env, "").strip()
        if not value:
            raise ConfigError(
                f"openviking auth mode {self.auth} needs the root key in the environment "
                f"variable {self.key_env}, which is unset or empty"
            )
        return value


def _tool_part(part: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger tool part in OpenViking's shape (OpenViking's own keys or the short ones)."""

    def pick(*keys: str) -> Any:
        return next((part[k] for k in keys if part.get(k) is not None), None)

    mapped = {
        "type": "tool",
        "tool_id": pick("tool_id", "id"),
        "tool_name": pick("tool_name", "name"),
        "tool_input": pick("tool_input", "input", "arguments"),
        "tool_output": pick("tool_output", "output", "result"),
        "tool_status": pick("tool_status", "status"),
    }
    return {k: v for k, v in mapped.items() if v is not None}


def message_of(entry: Entry, *, assistant_peer: str) -> dict[str, Any]:
    """One OpenViking message per ledger entry (the count must match for reconciliation).

    User entries are the user's; assistant, tool and system entries (replies,
    tool results, compression summaries) are the assistant's, so extraction does
    not attribute them to the user. Tool parts travel as OpenViking tool parts.
    """
    user = entry.role is Role.USER
    message: dict[str, Any] = {
        "role": "user" if user else "assistant",
        "created_at": entry.created_at.isoformat(),
    }
    if not user:
        message["peer_id"] = assistant_peer
    tools = [_tool_part(p) for p in entry.parts if p.get("type") == "tool"]
    if tools:
        text = [{"type": "text", "text": entry.text}] if entry.text else []
        message["parts"] = text + tools
    else:
        message["content"] = entry.text
    return message


class OpenVikingProvider:
    """A `MemoryProvider` (with `Reconciling`) backed by an OpenViking server."""

    def __init__(
        self,
        settings: OpenVikingSettings,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._http = OpenVikingHTTP(
            settings.endpoint,
            mode=settings.auth,
            key=settings.key(os.environ if environ is None else environ),
            timeout=httpx.Timeout(settings.request_timeout, connect=settings.connect_timeout),
            transport=transport,
        )
        # Sessions known to exist: saves a round trip per batch, nothing more.
        self._ensured: OrderedDict[tuple[Identity, str], None] = OrderedDict()

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def max_batch(self) -> int:
        return self._settings.max_batch

    @property
    def settings(self) -> OpenVikingSettings:
        return self._settings

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OpenVikingProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def identity(self, session: ProviderSession) -> Identity:
        """The OpenViking account and user that own `session`."""
        user = openviking_user(session.user_id, platform=session.platform, chat_id=session.chat_id)
        return Identity(self._settings.account, user)

    def user_identity(self, user_id: str) -> Identity:
        return Identity(self._settings.account, openviking_user(user_id))

    # -- sessions ----------------------------------------------------------------------

    async def session_info(self, session: ProviderSession) -> dict[str, Any] | None:
        """OpenViking's view of the session (`message_count`, `total_message_count`, ...)."""
        reply = await self._http.call(
            "GET",
            _session_path(session.session_id),
            identity=self.identity(session),
            what=f"reading session {session.session_id}",
            handle=frozenset({"NOT_FOUND"}),
        )
        return reply.result if reply.ok and isinstance(reply.result, dict) else None

    async def _ensure(self, session: ProviderSession, identity: Identity) -> None:
        cache_key = (identity, session.session_id)
        if cache_key in self._ensured:
            return
        await self._http.call(
            "GET",
            _session_path(session.session_id),
            identity=identity,
            params={"auto_create": "true"},
            what=f"ensuring session {session.session_id} exists",
        )
        self._ensured[cache_key] = None
        if len(self._ensured) > _ENSURED_CACHE:
            self._ensured.popitem(last=False)

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        """Append the entries as messages, in order, in one batch call.

        `idempotency_key` is unused: OpenViking has none, the gateway reconciles.
        """
        if not entries:
            return
        if len(entries) > self.max_batch:
            raise InvalidInput(
                f"{len(entries)} entries for session {session.session_id} exceed the "
                f"OpenViking batch limit of {self.max_batch}"
            )
        identity = self.identity(session)
        await self._ensure(session, identity)
        first, last = entries[0].seq, entries[-1].seq
        what = f"adding seqs {first}-{last} to session {session.session_id}"
        peer = self._settings.assistant_peer
        reply = await self._http.call(
            "POST",
            f"{_session_path(session.session_id)}/messages/batch",
            identity=identity,
            json={"messages": [message_of(e, assistant_peer=peer) for e in entries]},
            what=what,
        )
        added = reply.result.get("added") if isinstance(reply.result, dict) else None
        if added is not None and added != len(entries):
            raise ProviderUnavailable(
                f"OpenViking at {self._http.endpoint}: {what}: added {added} of "
                f"{len(entries)} messages; the gateway reconciles before sending again"
            )

    async def uncommitted_count(self, session: ProviderSession) -> int:
        """The session's live `message_count`: messages appended since its last commit."""
        info = await self.session_info(session)
        if info is None:
            return 0
        return int(info.get("message_count") or 0)

    # -- commits -------------------------------------------------------------------------

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        """Archive the live messages and wait for the extraction task to end.

        `skipped` (nothing live) is success, unless an earlier attempt's commit was
        accepted and its answer lost: then that attempt's task decides the outcome.
        A task still running after `task_max_wait` raises, and the retry resumes it.
        """
        sid = session.session_id
        identity = self.identity(session)
        what = f"committing epoch {epoch} (seqs {first_seq}-{last_seq}) of session {sid}"
        reply = await self._http.call(
            "POST",
            f"{_session_path(sid)}/commit",
            identity=identity,
            json={"keep_recent_count": 0},
            what=what,
        )
        result = reply.result if isinstance(reply.result, dict) else {}
        status = result.get("status")
        if status == "accepted" and result.get("task_id"):
            return await self._await_task(identity, str(result["task_id"]), what)
        if status == "skipped":
            task = await self._latest_commit_task(identity, sid, what)
            if task is None:
                return CommitOutcome(detail=f"nothing to commit ({result.get('reason')})")
            return await self._await_task(identity, str(task["task_id"]), what)
        raise ProviderUnavailable(
            f"OpenViking at {self._http.endpoint}: {what}: unexpected answer status {status!r}"
        )

    async def _latest_commit_task(
        self, identity: Identity, session_id: str, what: str
    ) -> dict[str, Any] | None:
        reply = await self._http.call(
            "GET",
            "/api/v1/tasks",
            identity=identity,
            params={"task_type": "session_commit", "resource_id": session_id, "limit": 50},
            what=f"{what}: listing its commit tasks",
        )
        tasks = [t for t in reply.result or [] if isinstance(t, dict) and t.get("task_id")]
        if not tasks:
            return None
        latest: dict[str, Any] = max(tasks, key=lambda t: float(t.get("created_at") or 0))
        return latest

    async def _await_task(self, identity: Identity, task_id: str, what: str) -> CommitOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.task_max_wait
        while True:
            reply = await self._http.call(
                "GET",
                f"/api/v1/tasks/{quote(task_id, safe='')}",
                identity=identity,
                what=f"{what}: polling task {task_id}",
            )
            task = reply.result if isinstance(reply.result, dict) else {}
            status = str(task.get("status"))
            if status in _DONE:
                extracted = (task.get("result") or {}).get("memories_extracted")
                return CommitOutcome(detail=f"task {task_id} completed: {extracted}")
            if status in _FAILED:
                detail = f"OpenViking task {task_id} {status}: {task.get('error') or 'no error'}"
                log.warning("%s: %s; the epoch will be replayed", what, detail)
                return CommitOutcome(accepted=True, failed_after_accept=True, detail=detail)
            if loop.time() >= deadline:
                raise ProviderUnavailable(
                    f"OpenViking at {self._http.endpoint}: {what}: task {task_id} still "
                    f"{status} after {self._settings.task_max_wait:.0f} s; retried later"
                )
            await asyncio.sleep(self._settings.task_poll_interval)

    # -- recall and health -----------------------------------------------------------------

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> list[RecallHit]:
        """The user's memories for `query`, best first, within `recall_deadline`.

        The call is made as the user and searches only the user's memory tree;
        hits outside it are dropped all the same. Directory overviews are skipped.
        """
        identity = self.user_identity(scope.user_id)
        root = f"viking://user/{identity.user}/memories"
        deadline = self._settings.recall_deadline
        try:
            async with asyncio.timeout(deadline):
                reply = await self._http.call(
                    "POST",
                    "/api/v1/search/find",
                    identity=identity,
                    json={"query": query, "target_uri": root, "limit": limit},
                    wire_timeout=httpx.Timeout(deadline),
                    what=f"recalling for user {scope.user_id!r}",
                )
        except TimeoutError as exc:
            raise ProviderUnavailable(
                f"OpenViking at {self._http.endpoint}: recall for user {scope.user_id!r} "
                f"exceeded its {deadline:.3f} s deadline"
            ) from exc
        found = reply.result.get("memories") if isinstance(reply.result, dict) else None
        hits = [
            RecallHit(provider=self.name, text=str(m["abstract"]), score=float(m.get("score") or 0))
            for m in found or []
            if isinstance(m, dict)
            and m.get("abstract")
            and str(m.get("uri", "")).startswith(root + "/")
            and not str(m.get("uri", "")).rsplit("/", 1)[-1].startswith(".")
        ]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:limit]

    async def forget(self, *, user_id: str | None, session: ProviderSession | None) -> None:
        """Delete a session (its extracted memories stay), or all of a user's memories."""
        if session is not None:
            await self._http.call(
                "DELETE",
                _session_path(session.session_id),
                identity=self.identity(session),
                what=f"deleting session {session.session_id}",
                handle=frozenset({"NOT_FOUND"}),
            )
        if user_id is not None:
            identity = self.user_identity(user_id)
            await self._http.call(
                "DELETE",
                "/api/v1/fs",
                identity=identity,
                params={"uri": f"viking://user/{identity.user}/memories", "recursive": "true"},
                what=f"deleting the memories of user {user_id!r}",
                handle=frozenset({"NOT_FOUND"}),
            )

    async def health(self) -> bool:
        """Whether the server answers `/health` as healthy."""
        try:
            body = await self._http.health()
        except ProviderUnavailable as exc:
            log.warning("%s health check failed: %s", self.name, exc)
            return False
        return body.get("healthy") is True


def _session_path(session_id: str) -> str:
    return f"{_SESSIONS}/{quote(session_id, safe='')}"
