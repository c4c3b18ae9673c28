"""Long replies cut into pieces a chat platform accepts, at natural boundaries."""

from __future__ import annotations

import unicodedata

#: Telegram's limit, in UTF-16 code units.
MESSAGE_LIMIT = 4096
# Characters that belong to the character before them: never cut in front of one.
_JOINERS = frozenset("\u200d\ufe0e\ufe0f\u20e3")


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """`text` in pieces Telegram accepts: each at most `limit` UTF-16 units, none blank.

    Cuts at a paragraph break if one falls in the second half of a piece, else at a
    line break, else at a space, else between two characters (never inside a
    surrogate pair, nor in front of a combining mark, joiner or variation selector).
    """
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        fit = _fitting(rest, limit)
        if fit == len(rest):
            pieces.append(rest)
            break
        end, start = _cut(rest, fit)
        piece = rest[:end].rstrip()
        if piece:
            pieces.append(piece)
        rest = rest[start:].lstrip("\n")
    return pieces


def _fitting(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-16 code units."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return max(index, 1)  # always progress, even with a limit below one character
    return len(text)


def _cut(text: str, fit: int) -> tuple[int, int]:
    """Where the piece of `text[:fit]` ends and where the next piece starts."""
    half = fit // 2
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, 0, fit)
        if at >= half and at > 0:
            return at, at + len(separator)
    at = fit
    while at > half and _clings(text, at):
        at -= 1
    return (at, at) if at > half else (fit, fit)


def _clings(text: str, at: int) -> bool:
    """Whether cutting `text` before index `at` would tear a visible character apart."""
    char, before = text[at], text[at - 1]
    return (
        bool(unicodedata.combining(char))
        or char in _JOINERS
        or before == "\u200d"
        or 0x1F3FB <= ord(char) <= 0x1F3FF  # skin tone modifiers
        or (before == "\r" and char == "\n")
    )
