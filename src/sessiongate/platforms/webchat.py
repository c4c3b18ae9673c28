"""The web chat page: `GET /` serves a single page, `WS /ws` carries the conversation.

The page keeps a random client id in the browser's localStorage and connects to
`/ws?client=<id>`; that id is the chat and the user (a web DM), so reloading the
page, or coming back tomorrow, continues the same conversation. The protocol is
JSON text frames:

client → server
    `{"type": "message", "text": "...", "ref": "optional id echoed back"}`

server → client
    `{"type": "conversation", "client", "session", "entries"}` on connect and after
    a command (the session and its visible ledger, as a reload would show them);
    `{"type": "reply", "ref", "reply", "session", "command", "notice",
    "interrupted", "recalled"}` for each handled message, in the order sent;
    `{"type": "error", "ref", "code", "message"}` for anything refused, which is
    never stored; the socket keeps serving.

A socket is read continuously and its messages are answered one at a time, in
order, by a worker of its own, so a slow agent turn never stops the page from
being heard: `/stop` goes to the gateway at once and interrupts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sessiongate.config import WebSettings
from sessiongate.gateway.commands import parse_command
from sessiongate.gateway.core import Gateway
from sessiongate.gateway.message import Inbound, Outbound
from sessiongate.models import ChatType, Entry, Session, Source
from sessiongate.platforms.access import TOKEN_COOKIE, Access

log = logging.getLogger(__name__)

PLATFORM = "web"
#: Client ids the page generates: URL-safe base64 characters, at most 128 of them.
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Messages one socket may have waiting behind the one being answered.
MAX_PENDING = 32
_MAX_REF = 128

# Close codes in the application range (4000-4999), mirroring HTTP statuses.
CLOSE_BAD_CLIENT = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403

_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere; say so, so an injected script could not either.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class FrameError(Exception):
    """A frame the socket refuses: answered with an error frame, nothing stored."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


def read_asset(name: str) -> bytes:
    """One of the page's files, from the installed package (`platforms/webchat/`)."""
    return resources.files("sessiongate.platforms").joinpath("webchat", name).read_bytes()


def web_source(client_id: str) -> Source:
    """The source of a browser's messages: its client id is the chat and the user."""
    return Source(platform=PLATFORM, chat_id=client_id, chat_type=ChatType.DM, user_id=client_id)


def session_json(session: Session | None) -> dict[str, Any] | None:
    """What the page shows of a session."""
    if session is None:
        return None
    return {
        "id": session.id,
        "key": session.key,
        "state": str(session.state),
        "title": session.title,
        "turns": session.turn_count,
    }


def entry_json(entry: Entry) -> dict[str, Any]:
    """One ledger entry as the page renders it."""
    return {
        "seq": entry.seq,
        "role": str(entry.role),
        "text": entry.text,
        "at": entry.created_at.isoformat(),
    }


def error_frame(code: str, message: str, ref: str | None = None) -> dict[str, Any]:
    """An error frame: `code` for programs, `message` for people."""
    return {"type": "error", "ref": ref, "code": code, "message": message}


def reply_frame(out: Outbound, ref: str | None) -> dict[str, Any]:
    """The answer to one message; an `Outbound` without a session was refused, unstored."""
    if out.session is None:
        return error_frame("not_accepted", out.full_text, ref)
    return {
        "type": "reply",
        "ref": ref,
        "reply": out.full_text,
        "session": session_json(out.session),
        "command": out.command,
        "notice": out.notice,
        "interrupted": out.interrupted,
        "recalled": out.recalled_json(),
    }


def parse_frame(message: Mapping[str, Any]) -> tuple[str | None, str]:
    """The `(ref, text)` of a `websocket.receive` message, or `FrameError`."""
    raw = message.get("text")
    if raw is None:
        raise FrameError("binary_frame", "binary frames are not understood; send JSON text")
    try:
        frame = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FrameError("invalid_json", f"the frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise FrameError("invalid_frame", 'a frame is a JSON object like {"type": "message"}')
    ref = frame.get("ref")
    if ref is not None and (not isinstance(ref, str) or not 0 < len(ref) <= _MAX_REF):
        raise FrameError("invalid_ref", f"ref must be a string of 1 to {_MAX_REF} characters")
    kind = frame.get("type")
    if kind != "message":
        raise FrameError("unknown_type", f'unknown frame type {kind!r}; send "message"', ref)
    text = frame.get("text")
    if not isinstance(text, str):
        raise FrameError("invalid_text", "text must be a string", ref)
    if not text.strip():
        raise FrameError("empty", "the message is empty; type something to say", ref)
    return ref, text


def _is_stop(text: str) -> bool:
    parsed = parse_command(text)
    return parsed is not None and parsed.name == "stop"


class WebChat:
    """The web chat platform: the page, its assets and its WebSocket (routes only)."""

    name = PLATFORM

    def __init__(self, gateway: Gateway, access: Access, settings: WebSettings) -> None:
        self._gateway = gateway
        self._access = access
        self._settings = settings
        # Read once: the files are part of the installed package and do not change.
        self._page = read_asset("index.html")
        self._assets = {name: read_asset(name) for name in _ASSETS}

    def routes(self) -> Sequence[BaseRoute]:
        """`/`, `/webchat/{asset}` and `/ws`."""
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/webchat/{name}", self.asset, methods=["GET"]),
            WebSocketRoute("/ws", self.socket),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Nothing to poll: the routes do all the work."""

    async def page(self, request: Request) -> Response:
        """The chat page; a token in the query is kept in a cookie for the socket."""
        if not self._access.allows(request):
            return HTMLResponse(_REFUSED_PAGE, status_code=401, headers=_PAGE_HEADERS)
        response = Response(self._page, media_type="text/html", headers=_PAGE_HEADERS)
        token = request.query_params.get("token")
        if token and self._access.check(token):
            response.set_cookie(
                TOKEN_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def asset(self, request: Request) -> Response:
        """The page's script and style sheet (not secret: no token needed)."""
        name = request.path_params["name"]
        body = self._assets.get(name)
        if body is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(
            body,
            media_type=_ASSETS[name],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def socket(self, websocket: WebSocket) -> None:
        """One browser tab: check it, send the conversation, then serve its frames."""
        refusal = self._refusal(websocket)
        # Accepted even when refused: only an accepted socket can tell the page why
        # (a refused handshake is an opaque failed connection in browsers).
        await websocket.accept()
        if refusal is not None:
            close, code, message = refusal
            await _send(websocket, error_frame(code, message))
            await websocket.close(close, reason=message[:120])
            return
        client = websocket.query_params["client"]
        await _Connection(websocket, self._gateway, web_source(client)).serve()

    def _refusal(self, websocket: WebSocket) -> tuple[int, str, str] | None:
        """Why this socket is refused, as (close code, error code, message), or None."""
        if not self._access.allows(websocket):
            return (
                CLOSE_UNAUTHORIZED,
                "unauthorized",
                "a valid token is required: open the page as /?token=…",
            )
        if not self._access.required and not _same_origin(websocket):
            return (
                CLOSE_FORBIDDEN,
                "forbidden_origin",
                "only this gateway's own page may connect without a token",
            )
        client = websocket.query_params.get("client")
        if client is None or CLIENT_ID.fullmatch(client) is None:
            return (
                CLOSE_BAD_CLIENT,
                "invalid_client",
                "connect as /ws?client=<id>: 1 to 128 letters, digits, '-' or '_'",
            )
        return None


def _same_origin(websocket: WebSocket) -> bool:
    # Browsers send Origin on WebSockets but do not enforce same-origin for them: on
    # an open loopback gateway any site the user visits could otherwise talk to it.
    # (With a token, the SameSite cookie or the token itself stops those sites.)
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser
    netloc = urlsplit(origin).netloc.lower()
    hosts = {websocket.headers.get("host", ""), websocket.headers.get("x-forwarded-host", "")}
    return netloc in {host.lower() for host in hosts if host}


async def _send(websocket: WebSocket, frame: dict[str, Any]) -> bool:
    """Send one frame; False once the browser has gone (its replies stay in the ledger)."""
    try:
        await websocket.send_text(json.dumps(frame, ensure_ascii=False))
    except (WebSocketDisconnect, RuntimeError):
        return False
    return True


class _Connection:
    """One open socket: a reader that never waits for the agent, and an in-order worker."""

    def __init__(self, websocket: WebSocket, gateway: Gateway, source: Source) -> None:
        self._ws = websocket
        self._gateway = gateway
        self._source = source
        # Unbounded so the end-of-input marker always fits; MAX_PENDING bounds it.
        self._queue: asyncio.Queue[tuple[str | None, str] | None] = asyncio.Queue()
        self._send_lock = asyncio.Lock()

    async def serve(self) -> None:
        """Serve until the browser goes; messages already received are still answered."""
        await self._send(await self._conversation())
        async with asyncio.TaskGroup() as group:
            group.create_task(self._work(), name=f"webchat:{self._source.chat_id}")
            await self._read()
            # Every message read is handled (and so stored) even if the tab is gone:
            # a reload then shows its reply.
            self._queue.put_nowait(None)

    async def _read(self) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                ref, text = parse_frame(message)
            except FrameError as exc:
                await self._send(error_frame(exc.code, exc.message, exc.ref))
                continue
            if _is_stop(text):
                # Out of band on purpose: queued behind the turn it stops, it could not stop it.
                await self._send(reply_frame(await self._handle(text, ref), ref))
            elif self._queue.qsize() >= MAX_PENDING:
                await self._send(
                    error_frame(
                        "too_many_waiting",
                        f"{MAX_PENDING} messages are already waiting; send this one later",
                        ref,
                    )
                )
            else:
                self._queue.put_nowait((ref, text))

    async def _work(self) -> None:
        while (item := await self._queue.get()) is not None:
            ref, text = item
            out = await self._handle(text, ref)
            await self._send(reply_frame(out, ref))
            if out.command is not None and out.command != "stop" and out.session is not None:
                # Commands change what the conversation is (/new, /undo, /resume …):
                # send it afresh rather than have the page guess.
                await self._send(await self._conversation())

    async def _handle(self, text: str, ref: str | None) -> Outbound:
        return await self._gateway.handle(Inbound(self._source, text, platform_message_id=ref))

    async def _conversation(self) -> dict[str, Any]:
        session, entries = await self._gateway.conversation(self._source)
        return {
            "type": "conversation",
            "client": self._source.chat_id,
            "session": session_json(session),
            "entries": [entry_json(entry) for entry in entries],
        }

    async def _send(self, frame: dict[str, Any]) -> None:
        # The reader and the worker both answer; one frame at a time on the wire.
        async with self._send_lock:
            await _send(self._ws, frame)


_REFUSED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessiongate: token required</title></head>
<body><h1>A token is required</h1>
<p>This gateway is reachable from other machines, so the chat page needs its access
token. Open it as <code>/?token=&lt;your token&gt;</code>; the page remembers it in a
cookie.</p></body></html>
"""
