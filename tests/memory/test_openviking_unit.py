"""The OpenViking provider against a scripted HTTP transport: auth, envelopes, errors, tasks."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sessiongate.errors import ConfigError, InvalidInput, ProviderRejected, ProviderUnavailable
from sessiongate.memory.openviking import (
    AuthMode,
    OpenVikingProvider,
    OpenVikingSettings,
    openviking_user,
)
from sessiongate.memory.provider import ProviderSession, RecallScope
from sessiongate.models import Entry, Role

ROOT_KEY = "root-secret-4f2a"
SESSION = ProviderSession("s-1", "agent:main:telegram:dm:c1", "telegram", "u-42", "c1")
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENVIKING_ID = re.compile(r"^[a-zA-Z0-9_.@-]+$")

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


def ok(result: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "ok", "result": result})


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status, json={"status": "error", "error": {"code": code, "message": message}}
    )


@dataclass
class FakeServer:
    """Routes `METHOD /path` to handlers and records every request."""

    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, handler: Handler | httpx.Response) -> None:
        self.routes[f"{method} {path}"] = handler if callable(handler) else (lambda _: handler)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get(f"{request.method} {request.url.path}")
        if handler is None:
            return error(404, "NOT_FOUND", f"no route {request.url.path}")
        answer = handler(request)
        return await answer if isinstance(answer, Awaitable) else answer

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def entry(seq: int, text: str, role: Role = Role.USER, **extra: Any) -> Entry:
    return Entry("s-1", seq, role, text, AT, 3, **extra)


def settings(**changes: Any) -> OpenVikingSettings:
    values: dict[str, Any] = {
        "endpoint": "http://ov.test",
        "account": "acme",
        "task_poll_interval": 0.001,
        "task_max_wait": 0.2,
        "recall_deadline": 0.2,
    }
    values.update(changes)
    return OpenVikingSettings(**values)


@pytest.fixture
def server() -> FakeServer:
    fake = FakeServer()
    fake.on("GET", "/api/v1/sessions/s-1", ok({"session_id": "s-1", "message_count": 0}))
    fake.on(
        "POST",
        "/api/v1/sessions/s-1/messages/batch",
        lambda r: ok({"added": len(body(r)["messages"])}),
    )
    return fake


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[OpenVikingProvider]:
    async with OpenVikingProvider(
        settings(), environ={}, transport=httpx.MockTransport(server)
    ) as opened:
        yield opened


async def open_provider(server: FakeServer, **changes: Any) -> OpenVikingProvider:
    return OpenVikingProvider(
        settings(**changes),
        environ={"OPENVIKING_ROOT_KEY": ROOT_KEY},
        transport=httpx.MockTransport(server),
    )


# -- settings and user mapping ---------------------------------------------------------------


def test_trusted_and_api_key_modes_need_the_key_variable() -> None:
    for mode in (AuthMode.TRUSTED, AuthMode.API_KEY):
        with pytest.raises(ConfigError, match="OPENVIKING_ROOT_KEY"):
            OpenVikingProvider(settings(auth=mode), environ={})
    with pytest.raises(ConfigError, match="batch"):
        settings(max_batch=101)
    with pytest.raises(ConfigError, match="account"):
        settings(account="_bad")
    with pytest.raises(ConfigError, match="endpoint"):
        settings(endpoint="ov.test:1933")
    assert settings(auth="trusted").auth is AuthMode.TRUSTED


def test_user_ids_map_one_to_one_onto_valid_openviking_ids() -> None:
    ids = ["u-42", "Ada.Lovelace", "ada@example.com", "with space", "_u_x", "x" * 80, "", "é"]
    mapped = [openviking_user(i) for i in ids]
    assert mapped[:2] == ["u-42", "Ada.Lovelace"]
    assert len(set(mapped)) == len(ids)
    assert all(OPENVIKING_ID.match(m) and len(m) <= 64 for m in mapped)
    # Changed ids start with "_", which no id kept as it is does.
    assert all(m.startswith("_") for m in mapped[2:])
    assert openviking_user("ada@example.com") == openviking_user("ada@example.com")
    channel = openviking_user(None, platform="telegram", chat_id="c1")
    assert channel.startswith("_chat_")
    assert channel != openviking_user(None, platform="discord", chat_id="c1")


# -- auth headers ----------------------------------------------------------------------------


async def test_dev_mode_sends_identity_headers_and_no_key(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    await provider.deliver(SESSION, [entry(1, "hi")], idempotency_key="k")
    for request in server.requests:
        assert request.headers["X-OpenViking-Account"] == "acme"
        assert request.headers["X-OpenViking-User"] == "u-42"
        assert "X-API-Key" not in request.headers


async def test_trusted_mode_adds_the_root_key(server: FakeServer) -> None:
    async with await open_provider(server, auth=AuthMode.TRUSTED) as provider:
        await provider.deliver(SESSION, [entry(1, "hi")], idempotency_key="k")
    assert server.requests
    for request in server.requests:
        assert request.headers["X-API-Key"] == ROOT_KEY
        assert request.headers["X-OpenViking-User"] == "u-42"


async def test_api_key_mode_provisions_a_seeded_key_per_user(server: FakeServer) -> None:
    registered: list[dict[str, Any]] = []
    regenerated: list[dict[str, Any]] = []

    def register(request: httpx.Request) -> httpx.Response:
        registered.append(body(request))
        if len(registered) == 1:
            return error(404, "NOT_FOUND", "account acme not found")
        if body(request)["user_id"] == "u-42":
            return ok({"user_key": "key-of-u-42"})
        return error(409, "ALREADY_EXISTS", "user exists")

    server.on("POST", "/api/v1/admin/accounts", ok({"account_id": "acme"}))
    server.on("POST", "/api/v1/admin/accounts/acme/users", register)

    def regenerate(request: httpx.Request) -> httpx.Response:
        regenerated.append(body(request))
        return ok({"user_key": "key-of-u-43"})

    server.on("POST", "/api/v1/admin/accounts/acme/users/u-43/key", regenerate)
    server.on("POST", "/api/v1/search/find", ok({"memories": []}))
    async with await open_provider(server, auth=AuthMode.API_KEY) as provider:
        await provider.deliver(SESSION, [entry(1, "hi")], idempotency_key="k")
        await provider.deliver(SESSION, [entry(2, "again")], idempotency_key="k2")
        await provider.recall(RecallScope("u-43"), "coffee", limit=3)

    created = server.sent("POST", "/api/v1/admin/accounts")
    assert [body(r)["account_id"] for r in created] == ["acme"]
    # Registered once per user (the key is cached), with the same seed each time.
    assert [r["user_id"] for r in registered] == ["u-42", "u-42", "u-43"]
    # u-43 existed already: its key is regenerated from the same seed.
    assert len(regenerated) == 1
    seeds = {r["seed"] for r in registered} | {r["seed"] for r in regenerated}
    assert len(seeds) == 1
    assert ROOT_KEY not in seeds.pop()
    admin = [r for r in server.requests if r.url.path.startswith("/api/v1/admin/")]
    assert all(r.headers["X-API-Key"] == ROOT_KEY for r in admin)
    data = [r for r in server.requests if not r.url.path.startswith("/api/v1/admin/")]
    by_path = {r.url.path: r.headers["X-API-Key"] for r in data}
    assert by_path["/api/v1/sessions/s-1/messages/batch"] == "key-of-u-42"
    assert by_path["/api/v1/search/find"] == "key-of-u-43"
    assert all("X-OpenViking-User" not in r.headers for r in data)


async def test_api_key_mode_provisions_again_after_a_401(server: FakeServer) -> None:
    keys = iter(["old-key", "new-key"])
    server.on("POST", "/api/v1/admin/accounts/acme/users", lambda _: ok({"user_key": next(keys)}))

    def session(request: httpx.Request) -> httpx.Response:
        if request.headers["X-API-Key"] == "old-key":
            return error(401, "UNAUTHENTICATED", "invalid key")
        return ok({"message_count": 4})

    server.on("GET", "/api/v1/sessions/s-1", session)
    async with await open_provider(server, auth=AuthMode.API_KEY) as provider:
        assert await provider.uncommitted_count(SESSION) == 4


async def test_the_key_never_appears_in_errors(server: FakeServer) -> None:
    server.on("GET", "/api/v1/sessions/s-1", error(403, "PERMISSION_DENIED", "denied"))
    async with await open_provider(server, auth=AuthMode.TRUSTED) as provider:
        with pytest.raises(ProviderRejected) as caught:
            await provider.deliver(SESSION, [entry(1, "hi")], idempotency_key="k")
    assert ROOT_KEY not in str(caught.value)
    assert "s-1" in str(caught.value)
    assert "auth mode" in str(caught.value)
    assert ROOT_KEY not in repr(provider.settings)


# -- delivery --------------------------------------------------------------------------------


async def test_deliver_maps_roles_peers_and_tool_parts(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    tool = {"type": "tool", "id": "t1", "name": "weather", "arguments": {"city": "Oslo"}}
    tool |= {"output": "rain", "status": "completed"}
    entries = [
        entry(1, "what is the weather?"),
        entry(2, "let me look", Role.ASSISTANT, parts=(tool,)),
        entry(3, "rain in Oslo", Role.ASSISTANT),
        entry(4, "summary so far", Role.SYSTEM),
    ]
    await provider.deliver(SESSION, entries, idempotency_key="k")
    [batch] = server.sent("POST", "/api/v1/sessions/s-1/messages/batch")
    messages = body(batch)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "assistant", "assistant"]
    assert "peer_id" not in messages[0]
    assert {m.get("peer_id") for m in messages[1:]} == {"sessiongate"}
    assert messages[0]["content"] == "what is the weather?"
    assert messages[0]["created_at"] == AT.isoformat()
    assert messages[1]["parts"] == [
        {"type": "text", "text": "let me look"},
        {
            "type": "tool",
            "tool_id": "t1",
            "tool_name": "weather",
            "tool_input": {"city": "Oslo"},
            "tool_output": "rain",
            "tool_status": "completed",
        },
    ]


async def test_deliver_ensures_the_session_once_per_process(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    await provider.deliver(SESSION, [entry(1, "a")], idempotency_key="k1")
    await provider.deliver(SESSION, [entry(2, "b")], idempotency_key="k2")
    [ensure] = server.sent("GET", "/api/v1/sessions/s-1")
    assert ensure.url.params["auto_create"] == "true"
    assert len(server.sent("POST", "/api/v1/sessions/s-1/messages/batch")) == 2


async def test_deliver_refuses_more_than_the_batch_limit(provider: OpenVikingProvider) -> None:
    entries = [entry(seq, f"m{seq}") for seq in range(1, 102)]
    with pytest.raises(InvalidInput, match="batch limit of 100"):
        await provider.deliver(SESSION, entries, idempotency_key="k")


@pytest.mark.parametrize(
    ("answer", "expected", "words"),
    [
        (error(400, "INVALID_ARGUMENT", "bad role"), ProviderRejected, "INVALID_ARGUMENT"),
        (error(503, "UNAVAILABLE", "busy"), ProviderUnavailable, "UNAVAILABLE"),
        (httpx.Response(502, text="bad gateway"), ProviderUnavailable, "HTTP 502"),
        (httpx.Response(200, json=[1, 2]), ProviderUnavailable, "not an OpenViking envelope"),
        (ok({"added": 1}), ProviderUnavailable, "added 1 of 2"),
    ],
)
async def test_deliver_maps_error_answers(
    provider: OpenVikingProvider,
    server: FakeServer,
    answer: httpx.Response,
    expected: type[Exception],
    words: str,
) -> None:
    server.on("POST", "/api/v1/sessions/s-1/messages/batch", answer)
    with pytest.raises(expected) as caught:
        await provider.deliver(SESSION, [entry(1, "a"), entry(2, "b")], idempotency_key="k")
    assert words in str(caught.value)
    assert "seqs 1-2 to session s-1" in str(caught.value)


async def test_an_unreachable_server_is_unavailable(server: FakeServer) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server.on("GET", "/api/v1/sessions/s-1", refuse)
    async with await open_provider(server) as provider:
        with pytest.raises(ProviderUnavailable, match="ensuring session s-1 exists"):
            await provider.deliver(SESSION, [entry(1, "a")], idempotency_key="k")
        with pytest.raises(ProviderUnavailable, match="ConnectError"):
            await provider.uncommitted_count(SESSION)
        assert await provider.health() is False


async def test_uncommitted_count_is_the_live_message_count(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    server.on("GET", "/api/v1/sessions/s-1", ok({"message_count": 7, "total_message_count": 19}))
    assert await provider.uncommitted_count(SESSION) == 7
    server.on("GET", "/api/v1/sessions/s-1", error(404, "NOT_FOUND", "Session s-1 not found"))
    assert await provider.uncommitted_count(SESSION) == 0


# -- commits ---------------------------------------------------------------------------------


def task_answers(server: FakeServer, task_id: str, *statuses: str, error_text: str = "") -> None:
    remaining = list(statuses)

    def poll(_: httpx.Request) -> httpx.Response:
        status = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        result = {"memories_extracted": {"memory_write": 1}} if status == "completed" else None
        return ok({"task_id": task_id, "status": status, "error": error_text, "result": result})

    server.on("GET", f"/api/v1/tasks/{task_id}", poll)


async def commit(provider: OpenVikingProvider) -> Any:
    return await provider.commit(SESSION, epoch=1, first_seq=1, last_seq=4, idempotency_key="c")


async def test_commit_polls_the_task_until_it_completes(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    server.on("POST", "/api/v1/sessions/s-1/commit", ok({"status": "accepted", "task_id": "t-1"}))
    task_answers(server, "t-1", "pending", "running", "running", "completed")
    outcome = await commit(provider)
    assert outcome.accepted
    assert not outcome.failed_after_accept
    assert "memory_write" in (outcome.detail or "")
    [request] = server.sent("POST", "/api/v1/sessions/s-1/commit")
    assert body(request) == {"keep_recent_count": 0}
    assert len(server.sent("GET", "/api/v1/tasks/t-1")) == 4


async def test_a_failed_task_is_failed_after_accept(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    server.on("POST", "/api/v1/sessions/s-1/commit", ok({"status": "accepted", "task_id": "t-1"}))
    task_answers(server, "t-1", "running", "failed", error_text="Error code: 500")
    outcome = await commit(provider)
    assert outcome.accepted
    assert outcome.failed_after_accept
    assert "t-1 failed: Error code: 500" in (outcome.detail or "")


async def test_a_task_past_the_max_wait_raises(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    server.on("POST", "/api/v1/sessions/s-1/commit", ok({"status": "accepted", "task_id": "t-1"}))
    task_answers(server, "t-1", "running")
    with pytest.raises(ProviderUnavailable, match="task t-1 still running"):
        await commit(provider)


@pytest.mark.parametrize(
    ("tasks", "failed_after_accept"),
    [
        ([], False),
        ([{"task_id": "t-old", "created_at": 1.0}, {"task_id": "t-new", "created_at": 2.0}], True),
    ],
)
async def test_skipped_is_success_unless_the_last_attempts_task_failed(
    provider: OpenVikingProvider,
    server: FakeServer,
    tasks: list[dict[str, Any]],
    failed_after_accept: bool,
) -> None:
    skipped = ok({"status": "skipped", "task_id": None, "reason": "no_messages"})
    server.on("POST", "/api/v1/sessions/s-1/commit", skipped)
    server.on("GET", "/api/v1/tasks", ok(tasks))
    task_answers(server, "t-old", "completed")
    task_answers(server, "t-new", "running", "failed", error_text="model down")
    outcome = await commit(provider)
    assert outcome.accepted
    assert outcome.failed_after_accept is failed_after_accept
    [listing] = server.sent("GET", "/api/v1/tasks")
    assert listing.url.params["resource_id"] == "s-1"
    assert listing.url.params["task_type"] == "session_commit"


async def test_an_unexpected_commit_answer_raises(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    server.on("POST", "/api/v1/sessions/s-1/commit", ok({"status": "weird"}))
    with pytest.raises(ProviderUnavailable, match=r"epoch 1 .*session s-1.*'weird'"):
        await commit(provider)


# -- recall and health -------------------------------------------------------------------------


async def test_recall_searches_only_the_users_memories(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    mine = "viking://user/u-42/memories"
    found = [
        {"uri": f"{mine}/preferences/u-42/tea.md", "score": 0.4, "abstract": "- Likes tea"},
        {"uri": f"{mine}/preferences/u-42/.overview.md", "score": 0.9, "abstract": "# Overview"},
        {"uri": "viking://user/u-43/memories/x.md", "score": 0.95, "abstract": "- not mine"},
        {"uri": f"{mine}/preferences/u-42/coffee.md", "score": 0.8, "abstract": "- Dark roast"},
        {"uri": f"{mine}/events/e.md", "score": 0.7, "abstract": ""},
    ]
    server.on("POST", "/api/v1/search/find", ok({"memories": found, "total": 5}))
    hits = await provider.recall(RecallScope("u-42"), "coffee", limit=5)
    assert [h.text for h in hits] == ["- Dark roast", "- Likes tea"]
    assert {h.provider for h in hits} == {"openviking"}
    [request] = server.sent("POST", "/api/v1/search/find")
    assert body(request) == {"query": "coffee", "target_uri": mine, "limit": 5}
    assert request.headers["X-OpenViking-User"] == "u-42"


async def test_recall_gives_up_at_its_deadline(
    provider: OpenVikingProvider, server: FakeServer
) -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok({"memories": []})

    server.on("POST", "/api/v1/search/find", slow)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderUnavailable, match="deadline"):
        await provider.recall(RecallScope("u-42"), "coffee", limit=5)
    assert loop.time() - started < 1.0


async def test_health(provider: OpenVikingProvider, server: FakeServer) -> None:
    server.on("GET", "/health", httpx.Response(200, json={"status": "ok", "healthy": True}))
    assert await provider.health() is True
    server.on("GET", "/health", httpx.Response(503, json={"status": "error"}))
    assert await provider.health() is False


async def test_forget_deletes_the_session_as_its_user_and_the_users_memories(
    server: FakeServer, provider: OpenVikingProvider
) -> None:
    server.on("DELETE", "/api/v1/sessions/s-1", ok({"session_id": "s-1"}))
    server.on("DELETE", "/api/v1/fs", error(404, "NOT_FOUND", "no memories yet"))
    await provider.forget(user_id="u-42", session=SESSION)
    [deleted] = server.sent("DELETE", "/api/v1/sessions/s-1")
    assert deleted.headers["X-OpenViking-User"] == "u-42"
    [removed] = server.sent("DELETE", "/api/v1/fs")
    assert removed.url.params["uri"] == "viking://user/u-42/memories"
    assert removed.url.params["recursive"] == "true"
    assert removed.headers["X-OpenViking-User"] == "u-42"


async def test_forget_reports_a_server_that_refuses(
    server: FakeServer, provider: OpenVikingProvider
) -> None:
    server.on("DELETE", "/api/v1/sessions/s-1", error(503, "UNAVAILABLE", "busy"))
    with pytest.raises(ProviderUnavailable, match="deleting session s-1"):
        await provider.forget(user_id=None, session=SESSION)
