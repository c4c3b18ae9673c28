"""Telegram: a bot over python-telegram-bot, receiving by long polling or by webhook.

The bot runs inside the gateway's own event loop: the `Application` is
initialized, started and stopped by hand (never `run_polling`, which owns the
loop). In polling mode its `Updater` long-polls `getUpdates`; in webhook mode
the gateway's HTTP server receives Telegram's posts at `webhook_path` and the
bot only registers the URL.

Each message becomes a `Source` (private chat → dm; group or supergroup →
group, one session per user by default; a forum topic → thread, one session per
topic; channel post → channel) and goes to `Gateway.handle`; the reply goes back
to the same chat and topic, as a reply to the message, split at Telegram's 4096
character limit. Users not on the allowlist are refused before anything is
stored; messages that are not text get a short notice.

Ordering: PTB hands over updates one at a time in arrival order, and each is
turned into a job at once. A job calls the gateway immediately, whose per-session
lanes take messages in call order (and keep `/stop` and the busy policy
working), but it sends its reply only after the chat's previous job has sent
its own. So a chat's replies come in the order of its messages while different
chats are answered concurrently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hmac
import json
import logging
import os
import re
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from telegram import BotCommand, Message, ReplyParameters, Update
from telegram.constants import ChatAction, MessageEntityType
from telegram.constants import ChatType as TelegramChatType
from telegram.error import (
    BadRequest,
    Conflict,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import Application, TypeHandler

from sessiongate.config import TelegramSettings
from sessiongate.errors import ConfigError
from sessiongate.gateway.commands import HELP
from sessiongate.gateway.core import Gateway
from sessiongate.gateway.message import Inbound
from sessiongate.logs import about_session
from sessiongate.models import ChatType, Source
from sessiongate.platforms.splitting import split_message

log = logging.getLogger(__name__)

PLATFORM = "telegram"
#: Telegram's limit on one message, in UTF-16 code units (how it counts length).
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ONLY_TEXT = "Only text messages are supported; please send your message as text."
FAILED = "Sorry, this message could not be handled. Please send it again."
EMPTY_REPLY = "(the reply was empty)"

# Only these reach the bot: edits, reactions, member updates would be noise here.
_ALLOWED_UPDATES = ("message", "channel_post")
_TYPING_EVERY = 4.5  # Telegram shows "typing…" for about five seconds per action
_REFUSAL_EVERY = 3600.0  # a refused user is told once an hour, not at every message
_REFUSED_MAX = 10_000
_SEND_ATTEMPTS = 3
_MAX_RETRY_AFTER = 30.0
_SHUTDOWN_GRACE = 30.0
_MAX_WEBHOOK_BODY = 1024 * 1024
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MENU_NAME = re.compile(r"[a-z0-9_]{1,32}")
# What a malformed update can make Update.de_json raise.
_PARSE_ERRORS = (
    ArithmeticError,
    AttributeError,
    LookupError,
    OSError,
    RecursionError,
    TypeError,
    ValueError,
)
_LOG_PREFIXES = ("telegram", "httpx", "httpcore")

_App = Application[Any, Any, Any, Any, Any, Any]


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a reply goes: the chat, its forum topic, and the message answered."""

    chat_id: int
    thread_id: int | None
    message_id: int


def source_of(message: Message) -> Source:
    """The gateway's view of where `message` came from."""
    chat = message.chat
    thread = _topic(message)
    user_id, user_name = _sender(message)
    if chat.type == TelegramChatType.PRIVATE:
        kind = ChatType.DM
    elif chat.type == TelegramChatType.CHANNEL:
        # A channel speaks as itself: its posts are one conversation, not a user's.
        kind, user_id = ChatType.CHANNEL, None
    else:
        # A forum topic is shared by everyone in it (keys.py writes it as `thread`).
        kind = ChatType.THREAD if thread is not None else ChatType.GROUP
    return Source(
        platform=PLATFORM,
        chat_id=str(chat.id),
        chat_type=kind,
        user_id=user_id,
        user_name=user_name,
        thread_id=None if thread is None else str(thread),
    )


def _topic(message: Message) -> int | None:
    # Replies in ordinary groups carry a message_thread_id too; only forum topics count.
    return message.message_thread_id if message.is_topic_message else None


def _sender(message: Message) -> tuple[str | None, str | None]:
    """Who sent `message`: a chat speaking as itself (channel, anonymous admin) or a user."""
    if message.sender_chat is not None:
        chat = message.sender_chat
        name = message.author_signature or chat.title or chat.username
        return str(chat.id), name
    user = message.from_user
    if user is None:
        return None, None
    return str(user.id), user.username or user.full_name


def _command(message: Message) -> tuple[str, str | None] | None:
    """The command `message` starts with: its name and the bot it names (`/new@bot`)."""
    for entity in message.entities:
        if entity.type == MessageEntityType.BOT_COMMAND and entity.offset == 0:
            name, _, bot = message.parse_entity(entity)[1:].partition("@")
            return name.lower(), bot or None
    return None


def _for_another_bot(message: Message, username: str | None) -> bool:
    """Whether `message` is a command addressed to another bot (`/new@otherbot`)."""
    command = _command(message)
    if command is None or command[1] is None or username is None:
        return False
    return command[1].lower() != username.lower()


def _menu() -> list[BotCommand]:
    """The gateway's commands for Telegram's command menu."""
    menu = []
    for name, line in HELP.items():
        _, _, description = line.partition(" — ")
        if _MENU_NAME.fullmatch(name) and description:
            menu.append(BotCommand(name, description[:256]))
    return menu


class _Redactor(logging.Filter):
    """Keeps the bot token (and the webhook secret) out of log lines.

    The Bot API puts the token in every URL, which httpx and PTB log at debug and
    info level, and PTB's InvalidToken message quotes it.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]
        self._loggers: list[logging.Logger] = []

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            detail = "".join(traceback.format_exception(*record.exc_info))
            if any(secret in detail for secret in self._secrets):
                text = f"{text}\n{detail}"
                record.exc_info, record.exc_text = None, None
        if any(secret in text for secret in self._secrets):
            for secret in self._secrets:
                text = text.replace(secret, "<redacted>")
            record.msg, record.args = text, ()
        return True

    def install(self) -> None:
        # Logger filters see only their own logger's records, so every library
        # logger that exists by now gets one (PTB and httpx create theirs at import).
        names = [name for name in logging.root.manager.loggerDict if name.startswith(_LOG_PREFIXES)]
        for name in [*_LOG_PREFIXES, *names]:
            logger = logging.getLogger(name)
            logger.addFilter(self)
            self._loggers.append(logger)

    def remove(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self)
        self._loggers.clear()


class TelegramPlatform:
    """A Telegram bot feeding the gateway (see the module docstring)."""

    name = PLATFORM

    def __init__(self, gateway: Gateway, settings: TelegramSettings) -> None:
        self._gateway = gateway
        self._settings = settings
        token = os.environ.get(settings.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"platforms.telegram: the bot token is missing; set the environment variable "
                f"{settings.token_env} to the token @BotFather gave you"
            )
        if settings.mode == "webhook" and not settings.webhook_url:
            raise ConfigError(
                "platforms.telegram.webhook_url is required in webhook mode: the public "
                f"https:// URL that reaches {settings.webhook_path} on this server"
            )
        self._secret = _webhook_secret(settings)
        self._redactor = _Redactor([token, self._secret or ""])
        # PTB warns on every time period it hands out as an int; opt in to timedelta.
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        # Updates are processed one at a time, in order; `_on_update` only schedules.
        builder = Application.builder().token(token).base_url(settings.base_url)
        builder = builder.concurrent_updates(False)
        if settings.mode == "webhook":
            builder = builder.updater(None)
        self._redactor.install()  # the Bot logs its URL, token included, when built
        try:
            self._application: _App = builder.build()
        finally:
            self._redactor.remove()
        self._application.add_handler(TypeHandler(Update, self._on_update))
        self._application.add_error_handler(self._on_error)
        self._allowed = frozenset(settings.allowed_users)
        self._tails: dict[int, asyncio.Task[None]] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._refused: dict[tuple[int, str | None], float] = {}
        self._accepting = False

    def routes(self) -> Sequence[BaseRoute]:
        """The webhook endpoint in webhook mode; nothing in polling mode."""
        if self._settings.mode != "webhook":
            return []
        return [Route(self._settings.webhook_path, self._webhook, methods=["POST"])]

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until `stop` is set, then finish the replies under way and close.

        Raises `ConfigError` if the Bot API refuses the token; a Bot API that cannot
        be reached is retried with backoff until it can, or until `stop`.
        """
        app = self._application
        initialized = False
        self._redactor.install()
        try:
            if not await self._until(stop, app.initialize, "connect to the Bot API"):
                return
            initialized = True
            await app.start()
            try:
                self._accepting = True
                await self._announce()
                if await self._until(stop, self._begin_receiving, "start receiving updates"):
                    log.info(
                        "telegram: bot @%s receiving (%s)", app.bot.username, self._settings.mode
                    )
                    await stop.wait()
            finally:
                self._accepting = False
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                await app.stop()
                await self._finish_jobs()
        finally:
            await (app.shutdown() if initialized else app.bot.shutdown())
            self._redactor.remove()

    async def _announce(self) -> None:
        """Fill Telegram's command menu and say who may talk (best effort)."""
        if not (self._settings.allow_all_users or self._allowed):
            log.warning(
                "telegram: allowed_users is empty and allow_all_users is off: "
                "everyone is refused; add user ids to platforms.telegram.allowed_users"
            )
        try:
            await self._application.bot.set_my_commands(_menu())
        except TelegramError as exc:
            log.warning("telegram: could not set the command menu: %s", exc)

    async def _begin_receiving(self) -> None:
        app = self._application
        if app.updater is not None:
            await app.updater.start_polling(
                poll_interval=0.0,
                timeout=dt.timedelta(seconds=self._settings.poll_timeout),
                allowed_updates=_ALLOWED_UPDATES,
                error_callback=_polling_failed,
            )
            return
        if self._secret is None:
            log.warning(
                "telegram: webhook without a secret (webhook_secret_env): anyone who finds "
                "the URL can post updates as any user"
            )
        await app.bot.set_webhook(
            url=str(self._settings.webhook_url),
            secret_token=self._secret,
            allowed_updates=_ALLOWED_UPDATES,
        )

    async def _until(
        self, stop: asyncio.Event, action: Callable[[], Awaitable[None]], what: str
    ) -> bool:
        """Run `action` until it succeeds (True) or `stop` is set (False), backing off."""
        delay = 1.0
        while not stop.is_set():
            try:
                await action()
            except InvalidToken:
                raise ConfigError(
                    f"platforms.telegram: the Bot API refused the token in "
                    f"{self._settings.token_env}; check it with @BotFather"
                ) from None
            except TelegramError as exc:
                log.warning("telegram: could not %s (%s); retrying in %.0f s", what, exc, delay)
            else:
                return True
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, 60.0)
        return False

    async def _finish_jobs(self) -> None:
        """Let the replies under way be sent (the gateway's drain bounds the agent)."""
        if not self._jobs:
            return
        _, pending = await asyncio.wait(set(self._jobs), timeout=_SHUTDOWN_GRACE)
        if pending:
            log.warning("telegram: %d replies still unsent at stop; cancelling", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5)

    async def _webhook(self, request: Request) -> Response:
        """One update posted by Telegram; 200 once it is queued for its chat."""
        if self._secret is not None:
            given = request.headers.get(SECRET_HEADER, "")
            if not hmac.compare_digest(given.encode(), self._secret.encode()):
                return _problem(403, f"wrong or missing {SECRET_HEADER} header")
        if not self._accepting:
            # Telegram retries a failed delivery, so nothing is lost while starting.
            return _problem(503, "the Telegram bot is not running yet; retry shortly")
        body = await _body(request, _MAX_WEBHOOK_BODY)
        if body is None:
            return _problem(413, f"the update is over {_MAX_WEBHOOK_BODY} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return _problem(400, f"the body is not JSON: {exc}")
        if not isinstance(data, dict) or type(data.get("update_id")) is not int:
            return _problem(400, "not a Telegram update: expected an object with an update_id")
        try:
            update = Update.de_json(data, self._application.bot)
        except _PARSE_ERRORS as exc:
            return _problem(400, f"not a Telegram update: {type(exc).__name__}: {exc}")
        await self._application.update_queue.put(update)
        return JSONResponse({"ok": True})

    async def _on_update(self, update: Update, _context: Any) -> None:
        message = update.message or update.channel_post
        if message is not None:
            self._schedule(message)

    async def _on_error(self, update: object, context: Any) -> None:
        error = getattr(context, "error", None)
        log.error("telegram: handling an update failed: %r", error, exc_info=error)

    def _schedule(self, message: Message) -> None:
        """Start `message`'s job now; it sends after the chat's previous job."""
        chat_id = message.chat.id
        previous = self._tails.get(chat_id)
        job = asyncio.create_task(self._job(message, previous), name=f"telegram:{chat_id}")
        self._tails[chat_id] = job
        self._jobs.add(job)
        job.add_done_callback(functools.partial(self._forget, chat_id))

    def _forget(self, chat_id: int, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if self._tails.get(chat_id) is job:
            del self._tails[chat_id]

    async def _job(self, message: Message, previous: asyncio.Task[None] | None) -> None:
        target = _Target(message.chat.id, _topic(message), message.message_id)
        session_id: str | None = None
        try:
            # Awaited first and directly: the gateway sees the chat's messages in order.
            reply, session_id = await self._reply_to(message, target)
            if previous is not None:
                await asyncio.wait([previous])  # its own failure is logged by itself
            if reply is not None:
                await self._send(target, reply, session_id)
        except Exception:  # isolation point: one message's failure never stops the others
            with about_session(session_id):
                log.exception(
                    "telegram: message %s of chat %s failed (session %s)",
                    message.message_id,
                    target.chat_id,
                    session_id,
                )

    async def _reply_to(self, message: Message, target: _Target) -> tuple[str | None, str | None]:
        """The text to answer `message` with (None: no answer) and its session id."""
        if self._ignored(message):
            return None, None
        sender_id, _ = _sender(message)
        if not (self._settings.allow_all_users or sender_id in self._allowed):
            return self._refusal(message, sender_id), None
        text = message.text if message.text is not None else message.caption
        if text is None:
            return ONLY_TEXT, None
        command = _command(message)
        if command is not None and command[0] == "start":
            # Telegram's Start button sends /start: show what the bot can do.
            text = "/help"
        typing = asyncio.create_task(self._typing(target))
        try:
            out = await self._gateway.handle(
                Inbound(source_of(message), text, platform_message_id=str(message.message_id))
            )
        except Exception:  # isolation point: the user hears that it failed
            log.exception("telegram: the gateway failed on chat %s", target.chat_id)
            return FAILED, None
        finally:
            typing.cancel()
        return out.full_text, None if out.session is None else out.session.id

    def _ignored(self, message: Message) -> bool:
        """Messages the bot does not answer at all (not even with a notice)."""
        if message.is_automatic_forward:
            return True  # a linked channel's post, copied into its discussion group
        user = message.from_user
        if message.sender_chat is None and user is not None and user.is_bot:
            return True
        if _for_another_bot(message, self._application.bot.username):
            return True
        # Service messages (members joining, pins, topic edits) have neither text nor content.
        return message.text is None and message.caption is None and not _has_content(message)

    def _refusal(self, message: Message, sender_id: str | None) -> str | None:
        """The refusal notice, or None if this sender was told recently in this chat."""
        now = asyncio.get_running_loop().time()
        key = (message.chat.id, sender_id)
        told = self._refused.get(key)
        if told is not None and now - told < _REFUSAL_EVERY:
            return None
        if len(self._refused) >= _REFUSED_MAX:
            self._refused.clear()
        self._refused[key] = now
        what = "chat id" if message.sender_chat is not None else "user id"
        log.info("telegram: refused %s %s in chat %s", what, sender_id, message.chat.id)
        return (
            f"You are not allowed to use this bot; ask the operator to add your {what} "
            f"{sender_id} to platforms.telegram.allowed_users."
        )

    async def _typing(self, target: _Target) -> None:
        """Show "typing…" while the agent answers; purely cosmetic, so failures are ignored."""
        bot = self._application.bot
        while True:
            try:
                await bot.send_chat_action(
                    target.chat_id, ChatAction.TYPING, message_thread_id=target.thread_id
                )
            except TelegramError as exc:
                log.debug("telegram: typing action failed in chat %s: %s", target.chat_id, exc)
                return
            await asyncio.sleep(_TYPING_EVERY)

    async def _send(self, target: _Target, text: str, session_id: str | None) -> None:
        """Send `text` to `target` in pieces; a failure is logged with its session and chat."""
        pieces = split_message(text) or [EMPTY_REPLY]
        for index, piece in enumerate(pieces):
            reply = (
                ReplyParameters(target.message_id, allow_sending_without_reply=True)
                if index == 0
                else None
            )
            try:
                await self._send_piece(target, piece, reply)
            except TelegramError as exc:
                with about_session(session_id):
                    log.error(
                        "telegram: could not send the reply of session %s to chat %s "
                        "(part %d of %d): %s",
                        session_id,
                        target.chat_id,
                        index + 1,
                        len(pieces),
                        exc,
                    )
                return  # the later parts would make no sense without this one

    async def _send_piece(self, target: _Target, text: str, reply: ReplyParameters | None) -> None:
        bot = self._application.bot
        for attempt in range(_SEND_ATTEMPTS):
            last = attempt == _SEND_ATTEMPTS - 1
            try:
                await bot.send_message(
                    target.chat_id,
                    text,
                    message_thread_id=target.thread_id,
                    reply_parameters=reply,
                )
            except RetryAfter as exc:
                if last:
                    raise
                await asyncio.sleep(min(_seconds(exc.retry_after), _MAX_RETRY_AFTER))
            except (BadRequest, TimedOut):
                raise  # a bad request stays bad; a timed-out one may have been delivered
            except NetworkError:
                if last:
                    raise
                await asyncio.sleep(1.0 + attempt)
            else:
                return


def _has_content(message: Message) -> bool:
    return message.effective_attachment is not None


def _seconds(value: int | float | dt.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def _polling_failed(error: TelegramError) -> None:
    if isinstance(error, Conflict):
        log.error(
            "telegram: another process polls this bot token (%s); only one may. Run one "
            "poller, or use webhook mode when several replicas serve the bot",
            error,
        )
    else:
        log.warning("telegram: polling failed (%s); retrying", error)


def _webhook_secret(settings: TelegramSettings) -> str | None:
    if settings.webhook_secret_env is None:
        return None
    secret = os.environ.get(settings.webhook_secret_env, "")
    if not secret:
        raise ConfigError(
            f"platforms.telegram.webhook_secret_env names {settings.webhook_secret_env}, "
            "which is not set; set it to a random secret"
        )
    if not _SECRET.fullmatch(secret):
        raise ConfigError(
            f"the webhook secret in {settings.webhook_secret_env} must be 1 to 256 "
            "characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)"
        )
    return secret


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None if it is over `limit` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    return b"".join(parts)
