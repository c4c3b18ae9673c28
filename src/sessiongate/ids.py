"""Session ids: sortable by creation time, safe in URLs and file names, unique across replicas.

An id is a ULID written in lowercase Crockford base32: 26 characters encoding a
48-bit millisecond timestamp followed by 80 random bits. Ids sort as strings in
creation order (to the millisecond; within one generator, strictly). Two
replicas collide only if they draw the same 80 random bits in the same
millisecond.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TypeGuard

from sessiongate.clock import Clock, RandomSource
from sessiongate.errors import InvalidInput

ID_LENGTH = 26
TIME_BITS = 48
RANDOM_BITS = 80
MAX_TIME_MS = (1 << TIME_BITS) - 1
MAX_RANDOM = (1 << RANDOM_BITS) - 1

# Crockford's alphabet: no i, l, o, u, so ids are hard to misread.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_VALUE = {char: value for value, char in enumerate(ALPHABET)}
# 26 characters hold 130 bits; the top two must be zero, so the first is 0-7.
_MAX_FIRST = "7"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def encode_session_id(time_ms: int, randomness: int) -> str:
    """The id of a millisecond timestamp and 80 random bits."""
    if not 0 <= time_ms <= MAX_TIME_MS:
        raise InvalidInput(f"timestamp {time_ms} ms is outside what a session id can hold")
    if not 0 <= randomness <= MAX_RANDOM:
        raise InvalidInput(f"random part {randomness} does not fit in {RANDOM_BITS} bits")
    value = (time_ms << RANDOM_BITS) | randomness
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def decode_session_id(session_id: str) -> tuple[int, int]:
    """The (millisecond timestamp, random part) of a session id; `InvalidInput` if it is none."""
    check_session_id(session_id)
    value = 0
    for char in session_id:
        value = (value << 5) | _VALUE[char]
    return value >> RANDOM_BITS, value & MAX_RANDOM


def session_id_time(session_id: str) -> datetime:
    """When the session with this id was created (UTC, to the millisecond)."""
    time_ms, _ = decode_session_id(session_id)
    return _EPOCH + time_ms * _MS


def is_session_id(value: object) -> TypeGuard[str]:
    """Whether `value` is a well-formed session id."""
    return (
        isinstance(value, str)
        and len(value) == ID_LENGTH
        and value[0] <= _MAX_FIRST
        and all(char in _VALUE for char in value)
    )


def check_session_id(value: object, *, what: str = "session id") -> str:
    """`value` if it is a well-formed session id; otherwise `InvalidInput` saying why."""
    if is_session_id(value):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    shown = repr(value) if len(value) <= 64 else repr(value[:64]) + "…"
    if "/" in value or "\\" in value or ".." in value:
        problem = "contains a path separator or '..'"
    elif any(ord(char) < 32 or 127 <= ord(char) < 160 for char in value):
        problem = "contains a control character"
    elif len(value) != ID_LENGTH:
        problem = f"is {len(value)} characters long, not {ID_LENGTH}"
    elif value != value.lower() and is_session_id(value.lower()):
        problem = "has upper-case letters; session ids are lower-case"
    elif any(char not in _VALUE for char in value):
        bad = next(char for char in value if char not in _VALUE)
        problem = f"contains {bad!r}, which is not in the alphabet {ALPHABET}"
    else:
        problem = f"starts with {value[0]!r}, beyond the largest id (first character 0-7)"
    raise InvalidInput(f"{what} {shown} {problem}")


class IdGenerator:
    """Makes session ids from an injected clock and random source.

    Within one generator ids strictly increase, even when the clock stands still
    or steps back: an id in the same (or an earlier) millisecond as the last one
    reuses that millisecond and increments the last random part.
    """

    def __init__(self, clock: Clock, rand: RandomSource) -> None:
        self._clock = clock
        self._rand = rand
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        """A fresh session id, greater than every id this generator made before."""
        now_ms = (self._clock.now() - _EPOCH) // _MS
        with self._lock:
            if now_ms > self._last_ms:
                time_ms, randomness = now_ms, self._rand.getrandbits(RANDOM_BITS)
            elif self._last_random < MAX_RANDOM:
                time_ms, randomness = self._last_ms, self._last_random + 1
            else:
                # The random part is exhausted within this millisecond: borrow the next one.
                time_ms, randomness = self._last_ms + 1, self._rand.getrandbits(RANDOM_BITS)
            session_id = encode_session_id(time_ms, randomness)
            self._last_ms, self._last_random = time_ms, randomness
        return session_id
