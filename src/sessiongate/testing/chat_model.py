"""A scripted OpenAI-compatible chat model, for testing agents without a real model.

`FakeChatModel.app()` is an ASGI app serving `POST /v1/chat/completions`. It
answers deterministically and records every request, so a test can check what
an agent sent (system prompt, memory block, history) as well as what it got:

- a user message starting with `search:` makes it call the `memory_search` tool
  with the rest of the message as the query (when tools are offered);
- after a tool result it answers `from memory: <the tool's content>`;
- otherwise it answers `echo: <the last user message>`;
- `failing = True` makes it answer HTTP 500, as an outage would;
- `delay` seconds pass before each answer, as a model thinking would.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class FakeChatModel:
    """The scripted model; `requests` holds every request body received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failing = False
        self.delay = 0.0

    def app(self) -> Starlette:
        """The ASGI app to serve (e.g. through `httpx.ASGITransport` or uvicorn)."""
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            return JSONResponse({"error": {"message": "model down", "type": "server"}}, 500)
        return JSONResponse(_completion(body.get("model", "fake"), self._answer(body)))

    @staticmethod
    def _answer(body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = body.get("messages", [])
        last = messages[-1] if messages else {"role": "user", "content": ""}
        if last.get("role") == "tool":
            return {"role": "assistant", "content": f"from memory: {last.get('content')}"}
        text = str(last.get("content") or "")
        if body.get("tools") and text.startswith("search:"):
            call = {
                "id": f"call-{len(messages)}",
                "type": "function",
                "function": {
                    "name": "memory_search",
                    "arguments": json.dumps({"query": text.removeprefix("search:").strip()}),
                },
            }
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        return {"role": "assistant", "content": f"echo: {text}"}


def _completion(model: str, message: dict[str, Any]) -> dict[str, Any]:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
