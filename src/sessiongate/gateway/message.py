"""What platforms hand the gateway, and what they get back."""

from __future__ import annotations

from dataclasses import dataclass

from sessiongate.memory.provider import RecallHit
from sessiongate.models import Session, Source


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a chat platform."""

    source: Source
    text: str
    platform_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """The gateway's answer to one inbound message.

    `session` is the session the conversation continues in afterwards (after `/new`
    the fresh one). `command` names the slash command that was handled, if any;
    `notice` marks a short gateway notice (busy, refused, unknown command) that was
    not stored in the ledger.
    """

    session: Session | None
    text: str
    command: str | None = None
    notice: bool = False
    recalled: tuple[RecallHit, ...] = ()
    interrupted: bool = False
    # Said before the reply: e.g. that the session was automatically reset.
    preamble: str | None = None

    def recalled_json(self) -> list[dict[str, str | None]]:
        """The recalled memories as platforms send them to clients."""
        return [
            {"provider": hit.provider, "text": hit.text, "session_id": hit.session_id}
            for hit in self.recalled
        ]

    @property
    def full_text(self) -> str:
        """The preamble and the reply, as one message."""
        return self.text if not self.preamble else f"{self.preamble}\n\n{self.text}"
