"""Checks on values that come from outside, shared by the stores and the engine.

Refusals raise `InvalidInput` with a message naming the value and the problem,
before anything is written.
"""

from __future__ import annotations

import re

from sessiongate.errors import InvalidInput

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

# Ids, keys and names: printable, no path separators, no whitespace controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What no store can keep in text: NUL and UTF-16 surrogate code points.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_text(text: str, *, what: str = "message", max_bytes: int | None = None) -> None:
    """Refuse text that cannot be stored faithfully: NUL bytes, lone surrogates, oversize."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be text, got {type(text).__name__}")
    nul = text.find("\x00")
    if nul >= 0:
        raise InvalidInput(f"{what} contains a NUL byte at character {nul}; remove it and resend")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} is not valid Unicode (a lone surrogate at character {exc.start}); "
            "send it as UTF-8 text"
        ) from None
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(
            f"{what} is {size} bytes, over the maximum of {max_bytes} bytes; "
            "split it or raise `max_message_bytes`"
        )


def check_identifier(value: str, *, what: str, max_length: int = 512) -> None:
    """Refuse an id or key part that is empty, too long, or unsafe in paths and URLs."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidInput(f"{what} is {len(value)} characters, over the maximum of {max_length}")
    if _CONTROL.search(value):
        raise InvalidInput(f"{what} {value!r} contains a control character")
    if "/" in value or "\\" in value or ".." in value:
        raise InvalidInput(f"{what} {value!r} contains a path separator or '..'")
    check_text(value, what=what)


def check_json(value: object, *, what: str) -> None:
    """Refuse a JSON value (payload, parts, meta) that cannot be stored faithfully.

    Every key and string inside must pass `check_text`; keys must be strings;
    numbers must be finite; containers are dicts, lists and tuples only.
    """
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInput(f"{what} contains a non-finite number ({value}); JSON has none")
        return
    if isinstance(value, str):
        check_text(value, what=f"a string in {what}")
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_json(item, what=what)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{what} has a non-string key {key!r}; JSON keys are text")
            check_text(key, what=f"a key in {what}")
            check_json(item, what=what)
        return
    raise InvalidInput(f"{what} contains a {type(value).__name__}, which is not JSON")


def storable(text: str) -> str:
    """`text` with NUL bytes and lone surrogates replaced by U+FFFD, so every store keeps it.

    For diagnostics (job and cursor errors) that must be recorded, never refused.
    """
    return _UNSTORABLE.sub("\ufffd", text)
