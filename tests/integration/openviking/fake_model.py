"""A small OpenAI-compatible model server for the OpenViking server under test.

It answers the two calls OpenViking makes: embeddings (deterministic vectors of
hashed tokens, so texts sharing words are close) and chat completions. Memory
extraction prompts are answered from a script the test sets: the first scripted
marker word found in the prompt selects the JSON reply; otherwise `{}` (no
memories). `failing` makes every chat completion answer HTTP 500, as a model
outage would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DIMENSION = 64
EXTRACTION_PROMPT = "You are a memory extraction and maintenance agent"
_TOKEN = re.compile(r"[a-z0-9]+")


def embed(text: str, dimension: int = DIMENSION) -> list[float]:
    """A unit vector that is the sum of one signed basis vector per distinct word."""
    vector = [0.0] * dimension
    for token in set(_TOKEN.findall(text.lower())):
        digest = hashlib.sha256(token.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % dimension
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


def _encoded(vector: list[float], encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def _system_prompt(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "system":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class FakeModel:
    """What the fake answers; tests change it while the server runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str, Mapping[str, Any]] = {}
        self.failing = False
        self.extraction_calls = 0
        self.failed_calls = 0

    def script(self, marker: str, reply: Mapping[str, Any]) -> None:
        """Answer extraction prompts that contain `marker` with `reply` (JSON)."""
        with self._lock:
            self._replies[marker.lower()] = reply

    def extraction_reply(self, prompt: str) -> Mapping[str, Any]:
        lowered = prompt.lower()
        with self._lock:
            self.extraction_calls += 1
            for marker, reply in self._replies.items():
                if marker in lowered:
                    return reply
        return {}

    # -- routes -------------------------------------------------------------------

    async def embeddings(self, request: Request) -> JSONResponse:
        body = await request.json()
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs or []]
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encoded(embed(text), body.get("encoding_format")),
            }
            for i, text in enumerate(texts)
        ]
        tokens = sum(len(text.split()) for text in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake-embedding"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        if self.failing:
            self.failed_calls += 1
            return JSONResponse(
                {"error": {"message": "the model is down", "type": "server_error"}},
                status_code=500,
            )
        messages = body.get("messages") or []
        system = _system_prompt(messages)
        if system.lstrip().startswith(EXTRACTION_PROMPT):
            prompt = json.dumps(messages)
            content = json.dumps(self.extraction_reply(prompt))
        else:
            content = "A short conversation."
        return JSONResponse(
            {
                "id": f"chatcmpl-{time.monotonic_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake-chat"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )


class ModelServer:
    """Serves a `FakeModel` on a free loopback port from a background thread."""

    def __init__(self, model: FakeModel) -> None:
        self.model = model
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(model.app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake model server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
