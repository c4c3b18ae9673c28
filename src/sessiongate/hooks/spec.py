"""The plugin hooks sessiongate calls: their names and signatures, the one spec.

A plugin (a module or an object) implements a hook by having an attribute of the
hook's name, sync or async. Every public attribute whose name starts with `on_`
is taken for a hook implementation and checked against this module when the
plugin is registered. Hooks are called with keyword arguments; an implementation
may declare only the parameters it needs (pluggy's rule). Where the spec has
`**context`, an implementation may also name a context key (`session_key`,
`user_id`, …) as a parameter with a default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

#: Attributes with this prefix are hook implementations.
HOOK_PREFIX = "on_"


def on_event(event_type: str, payload: Mapping[str, Any]) -> None:
    """Any notification event (the ones directory hooks get), delivered at least once.

    Deduplicate by `payload["event_id"]`.
    """


def on_command(event_type: str, payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A slash command is about to run (`command:<name>`); runs inline, fails fast.

    Return None to allow it, or a decision: `{"decision": "allow" | "deny" | "handled"
    | "rewrite", "message": ..., "command_name": ..., "raw_args": ...}`.
    """
    return None


def on_session_reset(
    session_id: str,
    platform: str,
    reason: str,
    old_session_id: str | None = None,
    new_session_id: str | None = None,
    **context: Any,
) -> None:
    """A conversation's key moved to a fresh session (`session:reset`); at least once.

    `session_id` is the session that ended; `context` is the rest of the event payload.
    """


def on_session_finalize(
    session_id: str,
    platform: str,
    reason: str,
    old_session_id: str | None = None,
    new_session_id: str | None = None,
    **context: Any,
) -> None:
    """A session has ended for `reason` (any reason of the catalogue); at least once.

    Part of the end: the session is finalized only after this hook succeeded.
    """


_SPEC_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    on_event,
    on_command,
    on_session_reset,
    on_session_finalize,
)

#: Every hook a plugin may implement, by name.
HOOK_SPECS: Mapping[str, inspect.Signature] = MappingProxyType(
    {function.__name__: inspect.signature(function) for function in _SPEC_FUNCTIONS}
)

#: Names plugins written for other gateways use, and what to use instead.
HOOK_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "on_session_end": (
            "there is no per-turn 'on_session_end'; use on_session_finalize for the end "
            "of a session, or on_event for every event"
        ),
        "on_session_start": "use on_event and look for event_type 'session:start'",
    }
)
