"""The HTTP APIs: `POST /api/v1/messages` for bridges, and OpenAI-compatible `/v1`.

`/api/v1/messages` takes the message's source and text and answers with the
session and the reply; `platform` is any name the caller chooses (default `api`),
which is how other bridges feed the gateway.

`POST /v1/chat/completions` lets existing OpenAI clients talk to the gateway. The
gateway keeps the conversation itself, so only the last user message of
`messages` is taken; the conversation is named by the configured header
(`X-Session-Key` by default) or else the request's `user` field.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from sessiongate.config import ApiSettings
from sessiongate.gateway.core import Gateway
from sessiongate.gateway.message import Inbound, Outbound
from sessiongate.models import ChatType, Source
from sessiongate.platforms.access import Access

MODEL_NAME = "sessiongate"
_MAX_BODY = 16 * 1024 * 1024


class MessageIn(BaseModel):
    """The body of `POST /api/v1/messages`."""

    model_config = ConfigDict(extra="forbid")

    platform: str = Field(default="api", min_length=1, max_length=64)
    chat_id: str = Field(min_length=1, max_length=512)
    chat_type: ChatType = ChatType.DM
    user_id: str | None = Field(default=None, max_length=512)
    user_name: str | None = Field(default=None, max_length=512)
    thread_id: str | None = Field(default=None, max_length=512)
    text: str
    message_id: str | None = Field(default=None, max_length=512)


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request (content as text or text parts)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


class CompletionIn(BaseModel):
    """The part of an OpenAI chat completions request the gateway reads."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL_NAME
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = Field(default=None, max_length=512)
    stream: bool = False


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """An error body clients of both APIs understand (OpenAI's shape)."""
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise ValueError(f"the request body is {len(raw)} bytes, over {_MAX_BODY}")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the request body is not valid JSON: {exc}") from None


def _validation(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def outbound_json(out: Outbound) -> dict[str, Any]:
    """The JSON answer for one handled message."""
    session = out.session
    return {
        "session_id": None if session is None else session.id,
        "session_key": None if session is None else session.key,
        "state": None if session is None else str(session.state),
        "reply": out.full_text,
        "command": out.command,
        "notice": out.notice,
        "interrupted": out.interrupted,
        "recalled": out.recalled_json(),
    }


class HttpApi:
    """The HTTP API platform (routes only)."""

    name = "api"

    def __init__(self, gateway: Gateway, access: Access, settings: ApiSettings) -> None:
        self._gateway = gateway
        self._access = access
        self._settings = settings

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/chat/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    async def run(self, stop: Any) -> None:
        return None

    async def messages(self, request: Request) -> Response:
        if not self._access.allows(request):
            return error(401, "a valid token is required (Authorization: Bearer …)", "auth")
        try:
            body = MessageIn.model_validate(await _body(request))
        except ValueError as exc:
            text = _validation(exc) if isinstance(exc, ValidationError) else str(exc)
            return error(400, text)
        source = Source(
            platform=body.platform,
            chat_id=body.chat_id,
            chat_type=body.chat_type,
            user_id=body.user_id,
            user_name=body.user_name,
            thread_id=body.thread_id,
        )
        out = await self._gateway.handle(Inbound(source, body.text, body.message_id))
        return JSONResponse(outbound_json(out), status_code=422 if out.session is None else 200)

    async def models(self, request: Request) -> Response:
        if not self._access.allows(request):
            return error(401, "a valid token is required (Authorization: Bearer …)", "auth")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "sessiongate"}],
            }
        )

    async def completions(self, request: Request) -> Response:
        if not self._access.allows(request):
            return error(401, "a valid token is required (Authorization: Bearer …)", "auth")
        try:
            body = CompletionIn.model_validate(await _body(request))
        except ValueError as exc:
            text = _validation(exc) if isinstance(exc, ValidationError) else str(exc)
            return error(400, text)
        conversation = request.headers.get(self._settings.conversation_header) or body.user
        if not conversation:
            return error(
                400,
                f"name the conversation with the {self._settings.conversation_header} header "
                "or the `user` field",
            )
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            return error(400, "messages has no user message to answer")
        source = Source(platform="openai", chat_id=conversation, user_id=conversation)
        out = await self._gateway.handle(Inbound(source, users[-1].text()))
        if out.session is None:
            return error(400, out.text)
        if body.stream:
            return StreamingResponse(_stream(out, body.model), media_type="text/event-stream")
        return JSONResponse(_completion(out, body.model), headers=_session_headers(out))


def _session_headers(out: Outbound) -> dict[str, str]:
    return {} if out.session is None else {"X-Session-Id": out.session.id}


def _completion(out: Outbound, model: str) -> dict[str, Any]:
    session_id = out.session.id if out.session else "none"
    return {
        "id": f"chatcmpl-{session_id}-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": out.full_text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "session_id": session_id,
    }


async def _stream(out: Outbound, model: str) -> AsyncIterator[bytes]:
    base = _completion(out, model)
    finish: Literal["stop"] = "stop"
    for delta, reason in (({"role": "assistant", "content": out.full_text}, None), ({}, finish)):
        chunk = {
            "id": base["id"],
            "object": "chat.completion.chunk",
            "created": base["created"],
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"
