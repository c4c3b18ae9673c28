"""Session keys: the deterministic lane of a conversation, built from its source.

The grammar is the Hermes gateway's, so keys of existing deployments look the same:

    agent:<profile>:<platform>:<chat_type>:<chat_id>[:<thread_id>][:<user_id>]

- DMs: `agent:<profile>:<platform>:dm:<chat_id>[:<thread_id>]`; a DM without a chat
  id is keyed by its user id instead.
- Groups and channels: `...:<group|channel>:<chat_id>[:<user_id>]`, the user id
  present when `group_sessions_per_user` is on (the default).
- Threads: any non-DM message that carries a thread id is keyed with the chat
  type word `thread`: `...:thread:<chat_id>:<thread_id>[:<user_id>]`, the user id
  present only when both `group_sessions_per_user` and `thread_sessions_per_user`
  are on (threads are shared by default). A `thread` chat without a thread id is
  the thread named by its chat id.

Writing threads of groups and channels under `thread` (Hermes writes them under
`group`/`channel`) is what keeps keys injective: otherwise a shared thread
`group:<chat>:<thread>` and a per-user lane `group:<chat>:<user>` could be the
same string. It also gives a thread one lane whichever chat type an adapter
reports it under.

Each part is escaped, reversibly, so that no two distinct lanes share a key and
no key contains `/`, `\\`, `..` or a control character: `%`, `:`, `/`, `\\`,
control, format and space characters, and every dot of a run of two or more dots
become `%XX` (UTF-8 bytes). Plain ids (letters, digits, `-`, `_`, `@`, `+`, a
single `.`) are kept as they are.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from dataclasses import dataclass

from sessiongate.errors import ConfigError, InvalidInput
from sessiongate.models import ChatType, Source
from sessiongate.validation import check_text

KEY_PREFIX = "agent"
DEFAULT_PROFILE = "main"
# Bounds the key length; real platform ids are far shorter.
MAX_PART_CHARS = 256

_ALWAYS_ESCAPED = frozenset("%:/\\")
_PLAIN = re.compile(r"[A-Za-z0-9_@+.\-]*")
# Control, format (zero-width, bidi overrides), and separator characters: unsafe
# or invisible in logs, file names and terminals.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """How sources map to session keys (Hermes config words of the same names)."""

    # Namespace for several agents served by one gateway; `main` is Hermes' default.
    profile: str = DEFAULT_PROFILE
    group_sessions_per_user: bool = True
    thread_sessions_per_user: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.profile, str) or not self.profile:
            raise ConfigError("the key profile must be a non-empty name, e.g. 'main'")
        try:
            _check_part(self.profile, "profile")
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from None


def session_key(source: Source, policy: KeyPolicy) -> str:
    """The session key of `source` under `policy`.

    Deterministic, and injective over lanes: two sources get the same key exactly
    when they belong to the same conversation under `policy` (see the module
    docstring for which fields each chat type uses; an empty thread or user id
    counts as absent). Raises `InvalidInput` for a source that names no
    conversation (empty platform, a group without a chat id, a DM without a chat
    or user id) or holds an unstorable part (NUL byte, lone surrogate, too long).
    """
    if not source.platform:
        raise InvalidInput("the source's platform is empty; every message needs a platform name")
    try:
        chat_type = ChatType(source.chat_type)
    except ValueError:
        raise InvalidInput(
            f"chat type {source.chat_type!r} is not one of dm, group, channel, thread"
        ) from None
    thread_id = source.thread_id or None
    user_id = source.user_id or None
    fields = [(policy.profile, "profile"), (source.platform, "platform")]

    if chat_type is ChatType.DM:
        if source.chat_id:
            fields += [(ChatType.DM.value, "chat type"), (source.chat_id, "chat id")]
        elif user_id is not None:
            fields += [(ChatType.DM.value, "chat type"), (user_id, "user id")]
        else:
            raise InvalidInput(
                f"a {source.platform} direct message has neither a chat id nor a user id; "
                "one of them is needed to tell conversations apart"
            )
        if thread_id is not None:
            fields.append((thread_id, "thread id"))
        return _join(fields)

    if not source.chat_id:
        raise InvalidInput(
            f"a {source.platform} {chat_type.value} message has no chat id; "
            "group, channel and thread messages need one"
        )
    if chat_type is ChatType.THREAD and thread_id is None:
        thread_id = source.chat_id
    if thread_id is not None:
        fields += [
            (ChatType.THREAD.value, "chat type"),
            (source.chat_id, "chat id"),
            (thread_id, "thread id"),
        ]
        per_user = policy.group_sessions_per_user and policy.thread_sessions_per_user
    else:
        fields += [(chat_type.value, "chat type"), (source.chat_id, "chat id")]
        per_user = policy.group_sessions_per_user
    if per_user and user_id is not None:
        fields.append((user_id, "user id"))
    return _join(fields)


def encode_part(part: str, *, what: str = "key part") -> str:
    """Escape one key part (see the module docstring); `decode_part` reverses it."""
    _check_part(part, what)
    if _PLAIN.fullmatch(part) and ".." not in part:
        return part
    out: list[str] = []
    last = len(part) - 1
    for i, char in enumerate(part):
        if char == ".":
            in_run = (i > 0 and part[i - 1] == ".") or (i < last and part[i + 1] == ".")
            out.append("%2E" if in_run else ".")
        elif char in _ALWAYS_ESCAPED or unicodedata.category(char) in _ESCAPED_CATEGORIES:
            out.append(urllib.parse.quote(char, safe=""))
        else:
            out.append(char)
    return "".join(out)


def decode_part(encoded: str) -> str:
    """The original text of an escaped key part."""
    return urllib.parse.unquote(encoded, errors="strict")


def _join(fields: list[tuple[str, str]]) -> str:
    return ":".join([KEY_PREFIX, *(encode_part(value, what=what) for value, what in fields)])


def _check_part(part: str, what: str) -> None:
    check_text(part, what=what)
    if len(part) > MAX_PART_CHARS:
        raise InvalidInput(
            f"{what} is {len(part)} characters, over the maximum of {MAX_PART_CHARS}"
        )
