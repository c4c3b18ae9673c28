"""What a `command:*` decision hook answers: allow, deny, handled or rewrite."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from sessiongate.errors import InvalidInput
from sessiongate.hooks.events import command_event_type


class DecisionKind(StrEnum):
    """The verdict on a slash command."""

    ALLOW = "allow"  # run the command as typed
    DENY = "deny"  # do not run it; tell the user `message` if given
    HANDLED = "handled"  # the hook did the work; reply `message` if given
    REWRITE = "rewrite"  # run `command_name` with `raw_args` instead


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of the decision hooks for one command.

    `hook` names the hook that decided (None for the default allow); `error`
    carries, for operators, why a failing hook turned into a deny.
    """

    kind: DecisionKind
    message: str | None = None
    command_name: str | None = None
    raw_args: str | None = None
    hook: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.kind is DecisionKind.REWRITE:
            if self.command_name is None:
                raise InvalidInput("a rewrite decision needs a command_name")
            command_event_type(self.command_name)  # refuses names no command can have
        elif self.command_name is not None or self.raw_args is not None:
            raise InvalidInput(f"command_name and raw_args belong to rewrite, not {self.kind}")

    @classmethod
    def allow(cls) -> Decision:
        """Run the command: what happens when no hook objects."""
        return cls(DecisionKind.ALLOW)

    @classmethod
    def failed(cls, hook: str, error: str) -> Decision:
        """A decision hook broke or timed out: refuse the command, naming the hook."""
        return cls(
            DecisionKind.DENY,
            message=f"This command is unavailable right now: its hook '{hook}' failed.",
            hook=hook,
            error=error,
        )


def parse_decision(raw: object, *, hook: str) -> Decision:
    """Read what a handler returned, as Hermes hooks return it.

    Anything but a mapping (None, True, …) and a mapping without a `decision` key
    mean allow: notification-style handlers subscribed to `command:*` keep working.
    A mapping with a `decision` key must be a valid decision (`InvalidInput` otherwise).
    """
    if not isinstance(raw, Mapping) or "decision" not in raw:
        return Decision.allow()
    kind = raw["decision"]
    try:
        kind = DecisionKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in DecisionKind)
        raise InvalidInput(f"unknown decision {kind!r}; expected one of {known}") from None
    fields = {name: raw.get(name) for name in ("message", "command_name", "raw_args")}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"decision {name} must be text, got {type(value).__name__}")
    if kind is not DecisionKind.REWRITE:
        fields["command_name"] = fields["raw_args"] = None
    return Decision(kind, hook=hook, **fields)
