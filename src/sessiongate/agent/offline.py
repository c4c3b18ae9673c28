"""The offline agent: the default, needing no model.

Its replies are deterministic. Each says it is the offline agent and shows what
memory recalled for the message, so a demo shows the memory working end to end.
"""

from __future__ import annotations

from collections.abc import Sequence

from sessiongate.agent.base import AgentTurn
from sessiongate.models import Entry, Role, Session

_SNIPPET = 160
_SUMMARY_LINES = 12


def _snippet(text: str, limit: int = _SNIPPET) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class OfflineAgent:
    """Echoes the message and lists what memory recalled; the default agent."""

    name = "offline"

    async def reply(self, turn: AgentTurn) -> str:
        turns = sum(1 for entry in turn.history if entry.role is Role.USER) + 1
        lines = [
            f"(offline agent) You said: {_snippet(turn.message)}",
            f"This is message {turns} of session {turn.session.id}.",
        ]
        if turn.recalled.hits:
            lines.append("Memory recalled from your earlier conversations:")
            for hit in turn.recalled.hits:
                where = f"session {hit.session_id}" if hit.session_id else hit.provider
                when = f", {hit.created_at.date().isoformat()}" if hit.created_at else ""
                lines.append(f"- {_snippet(hit.text)} ({where}{when})")
        else:
            lines.append("Memory recalled nothing for this message.")
        if turn.recalled.skipped:
            lines.append(f"(too slow this turn: {', '.join(turn.recalled.skipped)})")
        return "\n".join(lines)

    async def summarize(self, session: Session, history: Sequence[Entry]) -> str:
        said = [entry for entry in history if entry.role in (Role.USER, Role.ASSISTANT)]
        lines = [f"Summary of session {session.id} ({len(said)} messages):"]
        for entry in said[-_SUMMARY_LINES:]:
            lines.append(f"- {entry.role}: {_snippet(entry.text, 120)}")
        return "\n".join(lines)

    async def close(self) -> None:
        return None
