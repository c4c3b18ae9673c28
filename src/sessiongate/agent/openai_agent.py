"""An agent over any OpenAI-compatible chat completions endpoint (the openai SDK).

Each turn sends the system prompt, the recalled memory block, as much ledger
history as fits the token budget (newest kept), and the user's message, and
offers a `memory_search` tool the model may call a few times before it answers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any, cast

import openai
from openai import AsyncOpenAI

from sessiongate.agent.base import AgentTurn
from sessiongate.config import OpenAIAgentSettings
from sessiongate.errors import ProviderUnavailable
from sessiongate.models import Entry, Role, Session

log = logging.getLogger(__name__)

MEMORY_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "memory_search",
        "description": "Search this user's long-term memory of earlier conversations.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to look for."}},
            "required": ["query"],
        },
    },
}
_ROLES = {Role.USER: "user", Role.ASSISTANT: "assistant", Role.SYSTEM: "system"}


def history_messages(history: Sequence[Entry], budget: int) -> list[dict[str, Any]]:
    """The newest ledger entries whose token estimates fit `budget`, oldest first."""
    chosen: list[dict[str, Any]] = []
    used = 0
    for entry in reversed(history):
        role = _ROLES.get(entry.role)
        if role is None or entry.meta.get("undone") or entry.meta.get("interrupted"):
            continue
        used += max(1, entry.token_estimate)
        if used > budget:
            break
        chosen.append({"role": role, "content": entry.text})
    chosen.reverse()
    return chosen


class OpenAIAgent:
    """Answers with a chat completions model; stateless between turns."""

    name = "openai"

    def __init__(self, settings: OpenAIAgentSettings, *, client: AsyncOpenAI | None = None):
        self._settings = settings
        self._client = client or AsyncOpenAI(
            base_url=settings.base_url,
            api_key=os.environ.get(settings.api_key_env) or "not-needed",
            timeout=settings.timeout,
            max_retries=1,
        )

    async def reply(self, turn: AgentTurn) -> str:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self._settings.system_prompt}
        ]
        if turn.memory_block:
            messages.append({"role": "system", "content": turn.memory_block})
        messages += history_messages(turn.history, self._settings.history_tokens)
        messages.append({"role": "user", "content": turn.message})
        for _ in range(self._settings.max_tool_rounds + 1):
            message = await self._complete(messages, tools=True)
            calls = message.tool_calls or []
            if not calls:
                return message.content or ""
            messages.append(message.model_dump(exclude_none=True))
            for call in calls:
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "content": await self._tool(
                            turn, call.function.name, call.function.arguments
                        ),
                    }
                )
        message = await self._complete(messages, tools=False)
        return message.content or ""

    async def _tool(self, turn: AgentTurn, name: str, arguments: str) -> str:
        if name != "memory_search":
            return json.dumps({"error": f"unknown tool {name!r}"})
        try:
            query = str(json.loads(arguments or "{}").get("query", ""))
        except (json.JSONDecodeError, AttributeError):
            return json.dumps({"error": "arguments must be a JSON object with a query"})
        hits = await turn.search(query)
        return json.dumps(
            [
                {
                    "text": hit.text,
                    "session_id": hit.session_id,
                    "date": hit.created_at.date().isoformat() if hit.created_at else None,
                }
                for hit in hits
            ]
        )

    async def _complete(self, messages: list[dict[str, Any]], *, tools: bool) -> Any:
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = [MEMORY_TOOL]
        if self._settings.temperature is not None:
            extra["temperature"] = self._settings.temperature
        try:
            response = await self._client.chat.completions.create(
                model=self._settings.model, messages=cast(Any, messages), **extra
            )
        except openai.APIError as exc:
            raise ProviderUnavailable(
                f"the model at {self._settings.base_url} failed: {exc}"
            ) from exc
        if not response.choices:
            raise ProviderUnavailable(f"the model at {self._settings.base_url} answered no choice")
        return response.choices[0].message

    async def summarize(self, session: Session, history: Sequence[Entry]) -> str:
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": "Summarize this conversation in a few short paragraphs. Keep every "
                "fact about the user and every open task.",
            },
            *history_messages(history, self._settings.history_tokens * 4),
        ]
        message = await self._complete(messages, tools=False)
        return f"Summary of session {session.id}:\n{message.content or ''}"

    async def close(self) -> None:
        await self._client.close()
