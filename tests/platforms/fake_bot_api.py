"""A fake Telegram Bot API server for the tests: the real client library talks to it.

It serves `/bot<token>/<method>` on a free loopback port and implements what
python-telegram-bot calls: `getMe`, `getUpdates` (long polling with offset
semantics: an update is delivered until a later call's offset confirms it),
`sendMessage` and `sendChatAction` (recorded), `setWebhook`, `deleteWebhook`
and `getWebhookInfo`. Tests enqueue updates built by the helpers below and
assert on what the bot sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOKEN = "123456:TEST-token_for-the-fake"
BOT_ID = 123456
BOT_USERNAME = "sessiongate_test_bot"

Json = dict[str, Any]


@dataclass
class Sent:
    """One `sendMessage` call as the server received it."""

    chat_id: int
    text: str
    message_thread_id: int | None
    reply_to: int | None
    message_id: int


@dataclass
class Failure:
    """An error the next matching `sendMessage` calls get instead of success."""

    chat_id: int | None
    code: int
    description: str
    times: int = 1
    retry_after: int | None = None


@dataclass
class FakeBotApi:
    """The fake server's state; `start()` serves it, `stop()` ends it."""

    token: str = TOKEN
    updates: list[Json] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    actions: list[tuple[int, str]] = field(default_factory=list)
    calls: list[tuple[str, Json]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    webhook: Json = field(default_factory=dict)
    commands: list[Json] = field(default_factory=list)
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _closing: bool = False

    @property
    def url(self) -> str:
        """The server's base URL (`base_url` is this plus `/bot`)."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve on a free loopback port in this event loop."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        app = Starlette(routes=[Route("/bot{token}/{method}", self._call, methods=["GET", "POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # uvicorn offers no event to wait on
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Wake the long polls and shut the server down."""
        self._closing = True
        await self._notify()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)

    # What tests do.

    async def enqueue(self, update: Json) -> int:
        """Queue `update` (its `update_id` is assigned here) for `getUpdates`."""
        update_id = next(self._ids)
        self.updates.append({"update_id": update_id, **update})
        await self._notify()
        return update_id

    def new_update_id(self) -> int:
        """An update id for an update posted by webhook instead of polled."""
        return next(self._ids)

    async def wait_sent(self, count: int, within: float = 10.0) -> list[Sent]:
        """Wait until at least `count` messages were sent; all of them."""
        await self._wait_for(lambda: len(self.sent) >= count, within, f"{count} messages")
        return list(self.sent)

    async def wait_call(self, method: str, within: float = 10.0) -> Json:
        """Wait for the first call of `method`; its parameters."""
        await self._wait_for(lambda: self._first(method) is not None, within, method)
        found = self._first(method)
        assert found is not None
        return found

    async def quiet(self, seconds: float = 0.5) -> None:
        """Let the bot run a while (to check it sends nothing more)."""
        await asyncio.sleep(seconds)

    def fail_sends(self, failure: Failure) -> None:
        """Make the next `sendMessage` calls (to `failure.chat_id`, or any) fail."""
        self.failures.append(failure)

    def texts(self, chat_id: int) -> list[str]:
        """What the bot sent to `chat_id`, in order."""
        return [sent.text for sent in self.sent if sent.chat_id == chat_id]

    # The Bot API.

    async def _call(self, request: Request) -> JSONResponse:
        if request.path_params["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.path_params["method"]
        params = await _params(request)
        self.calls.append((method, params))
        handler = self._methods().get(method.lower())
        if handler is None:
            return _error(404, "Not Found: method not found")
        result = await handler(params)
        if isinstance(result, JSONResponse):
            return result
        await self._notify()
        return JSONResponse({"ok": True, "result": result})

    def _methods(self) -> dict[str, Callable[[Json], Awaitable[Any]]]:
        return {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "sendchataction": self._ok,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._webhook_info,
            "setmycommands": self._set_commands,
        }

    async def _get_me(self, _params: Json) -> Json:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Sessiongate Test",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _get_updates(self, params: Json) -> list[Json]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if offset:
            # The offset confirms every earlier update: Telegram forgets them.
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not self.updates and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
        return self.updates[:limit]

    async def _send_message(self, params: Json) -> Json | JSONResponse:
        chat_id = int(params["chat_id"])
        failure = self._failure_for(chat_id)
        if failure is not None:
            extra = {"retry_after": failure.retry_after} if failure.retry_after else None
            return _error(failure.code, failure.description, extra)
        reply = params.get("reply_parameters")
        thread = params.get("message_thread_id")
        sent = Sent(
            chat_id=chat_id,
            text=str(params["text"]),
            message_thread_id=None if thread is None else int(thread),
            reply_to=None if reply is None else int(reply["message_id"]),
            message_id=next(self._message_ids),
        )
        self.sent.append(sent)
        return {
            "message_id": sent.message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Sessiongate Test"},
            "text": sent.text,
        }

    async def _ok(self, params: Json) -> bool:
        self.actions.append((int(params["chat_id"]), str(params.get("action"))))
        return True

    async def _set_webhook(self, params: Json) -> bool:
        self.webhook = dict(params)
        return True

    async def _set_commands(self, params: Json) -> bool:
        self.commands = list(params.get("commands") or [])
        return True

    async def _delete_webhook(self, _params: Json) -> bool:
        self.webhook = {}
        return True

    async def _webhook_info(self, _params: Json) -> Json:
        return {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }

    # Plumbing.

    def _failure_for(self, chat_id: int) -> Failure | None:
        for failure in self.failures:
            if failure.chat_id in (None, chat_id) and failure.times > 0:
                failure.times -= 1
                return failure
        return None

    def _first(self, method: str) -> Json | None:
        return next((params for name, params in self.calls if name == method), None)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for(self, done: Callable[[], bool], within: float, what: str) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(done)

        try:
            await asyncio.wait_for(wait(), within)
        except TimeoutError:
            raise AssertionError(
                f"no {what} from the bot in {within} s; sent: {self.sent}"
            ) from None


async def _params(request: Request) -> Json:
    """The call's parameters: PTB posts them form-encoded, JSON values as JSON text."""
    body = (await request.body()).decode()
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        data = json.loads(body or "{}")
        return dict(data) if isinstance(data, dict) else {}
    pairs = dict(urllib.parse.parse_qsl(body)) | dict(request.query_params)
    params: Json = {}
    for key, value in pairs.items():
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _error(code: int, description: str, parameters: Json | None = None) -> JSONResponse:
    body: Json = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return JSONResponse(body, status_code=code)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeBotApi]:
    """A started fake server, stopped afterwards."""
    fake = FakeBotApi()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


# Updates as Telegram sends them.

_message_ids = itertools.count(1)


def user(user_id: int, username: str | None = None, first_name: str = "Test") -> Json:
    """A Telegram user."""
    found: Json = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        found["username"] = username
    return found


def message(chat: Json, sender: Json | None, text: str | None = None, **extra: Any) -> Json:
    """A message in `chat`; a leading /command gets its bot_command entity."""
    found: Json = {"message_id": next(_message_ids), "date": int(time.time()), "chat": chat}
    if sender is not None:
        found["from"] = sender
    if text is not None:
        found["text"] = text
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            found["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
    return {**found, **extra}


def private(sender: Json, text: str | None = None, **extra: Any) -> Json:
    """An update with a private-chat message from `sender`."""
    chat = {"id": sender["id"], "type": "private", "first_name": sender["first_name"]}
    return {"message": message(chat, sender, text, **extra)}


def group(chat_id: int, sender: Json, text: str | None = None, **extra: Any) -> Json:
    """An update with a message in supergroup `chat_id`."""
    chat = {"id": chat_id, "type": "supergroup", "title": "Test group"}
    return {"message": message(chat, sender, text, **extra)}


def topic(chat_id: int, thread_id: int, sender: Json, text: str) -> Json:
    """An update with a message in forum topic `thread_id` of forum `chat_id`."""
    chat = {"id": chat_id, "type": "supergroup", "title": "Forum", "is_forum": True}
    return {
        "message": message(chat, sender, text, message_thread_id=thread_id, is_topic_message=True)
    }


def channel_post(chat_id: int, text: str) -> Json:
    """An update with a post in channel `chat_id` (the channel is its sender)."""
    chat = {"id": chat_id, "type": "channel", "title": "Test channel"}
    return {"channel_post": message(chat, None, text, sender_chat=chat)}


STICKER = {
    "file_id": "sticker-file",
    "file_unique_id": "sticker-unique",
    "type": "regular",
    "width": 512,
    "height": 512,
    "is_animated": False,
    "is_video": False,
}
