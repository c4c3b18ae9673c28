"""Session ids: time-sortable, monotonic per generator, URL-safe, strictly checked."""

from __future__ import annotations

import random
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessiongate.errors import InvalidInput
from sessiongate.ids import (
    ALPHABET,
    ID_LENGTH,
    MAX_RANDOM,
    MAX_TIME_MS,
    IdGenerator,
    check_session_id,
    decode_session_id,
    encode_session_id,
    is_session_id,
    session_id_time,
)
from sessiongate.testing import FakeClock

times_ms = st.integers(min_value=0, max_value=MAX_TIME_MS)
randoms = st.integers(min_value=0, max_value=MAX_RANDOM)
START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class FixedRandom:
    """A random source that always draws the same bits."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def random(self) -> float:
        return 0.5

    def getrandbits(self, k: int, /) -> int:
        return self.bits & ((1 << k) - 1)


@given(time_ms=times_ms, randomness=randoms)
def test_encode_decode_round_trip(time_ms: int, randomness: int) -> None:
    session_id = encode_session_id(time_ms, randomness)
    assert len(session_id) == ID_LENGTH
    assert is_session_id(session_id)
    assert check_session_id(session_id) == session_id
    assert decode_session_id(session_id) == (time_ms, randomness)


@given(first=st.tuples(times_ms, randoms), second=st.tuples(times_ms, randoms))
def test_string_order_is_time_then_random_order(
    first: tuple[int, int], second: tuple[int, int]
) -> None:
    a, b = encode_session_id(*first), encode_session_id(*second)
    assert (a < b) == (first < second)
    assert (a == b) == (first == second)


@given(time_ms=times_ms, randomness=randoms)
def test_ids_are_url_and_file_name_safe(time_ms: int, randomness: int) -> None:
    session_id = encode_session_id(time_ms, randomness)
    assert urllib.parse.quote(session_id, safe="") == session_id
    assert set(session_id) <= set(ALPHABET)
    assert session_id == session_id.lower()
    assert ".." not in session_id


@given(steps_ms=st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=60))
def test_a_generator_is_strictly_monotonic_even_if_the_clock_stalls_or_steps_back(
    steps_ms: list[int],
) -> None:
    clock = FakeClock(START)
    generator = IdGenerator(clock, random.Random(7))
    made = [generator.new()]
    for step in steps_ms:
        clock.advance(milliseconds=step)
        made.append(generator.new())
    assert made == sorted(made)
    assert len(set(made)) == len(made)


@given(
    offsets_ms=st.lists(
        st.integers(min_value=0, max_value=10**9), min_size=2, max_size=20, unique=True
    ),
    seeds=st.tuples(st.integers(), st.integers()),
)
def test_ids_from_several_replicas_sort_by_creation_time(
    offsets_ms: list[int], seeds: tuple[int, int]
) -> None:
    clock = FakeClock(START)
    replicas = [IdGenerator(clock, random.Random(seed)) for seed in seeds]
    made: list[tuple[datetime, str]] = []
    for index, offset in enumerate(sorted(offsets_ms)):
        clock.advance(milliseconds=offset - (clock.now() - START) / timedelta(milliseconds=1))
        session_id = replicas[index % 2].new()
        assert session_id_time(session_id) == clock.now()
        made.append((clock.now(), session_id))
    by_time = [session_id for _, session_id in sorted(made)]
    assert sorted(by_time) == by_time
    assert len(set(by_time)) == len(by_time)


def test_same_millisecond_increments_the_random_part() -> None:
    generator = IdGenerator(FakeClock(START), FixedRandom(1000))
    first, second = generator.new(), generator.new()
    assert decode_session_id(second) == (decode_session_id(first)[0], 1001)


def test_an_exhausted_random_part_borrows_the_next_millisecond() -> None:
    clock = FakeClock(START)
    generator = IdGenerator(clock, FixedRandom(MAX_RANDOM))
    first, second = generator.new(), generator.new()
    assert second > first
    assert decode_session_id(second)[0] == decode_session_id(first)[0] + 1


def test_replicas_at_the_same_instant_make_distinct_ids() -> None:
    clock = FakeClock(START)
    ids = {IdGenerator(clock, random.Random(seed)).new() for seed in range(200)}
    assert len(ids) == 200


def test_creation_time_is_recorded_to_the_millisecond() -> None:
    clock = FakeClock(START + timedelta(microseconds=123_456))
    session_id = IdGenerator(clock, random.Random(1)).new()
    assert session_id_time(session_id) == START + timedelta(milliseconds=123)


def test_a_clock_before_1970_is_refused() -> None:
    generator = IdGenerator(FakeClock(datetime(1969, 12, 31, tzinfo=UTC)), random.Random(1))
    with pytest.raises(InvalidInput, match="outside"):
        generator.new()


VALID = encode_session_id(1_780_000_000_000, 12345)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("../" + VALID[3:], "path separator"),
        (VALID[:10] + "/" + VALID[11:], "path separator"),
        (VALID[:10] + "\\" + VALID[11:], "path separator"),
        (VALID[:10] + ".." + VALID[12:], r"'\.\.'"),
        (VALID[:25] + "\n", "control character"),
        (VALID[:25] + "\x00", "control character"),
        (VALID[:-1], "25 characters long, not 26"),
        (VALID + "0", "27 characters long"),
        ("", "0 characters long"),
        (VALID.upper(), "upper-case"),
        (VALID[:25] + "u", "'u', which is not in the alphabet"),
        ("8" + VALID[1:], "first character 0-7"),
        (12345, "must be text, got int"),
        (None, "must be text, got NoneType"),
    ],
)
def test_malformed_ids_are_refused_with_the_reason(value: object, problem: str) -> None:
    assert not is_session_id(value)
    with pytest.raises(InvalidInput, match=problem):
        check_session_id(value)


@given(value=st.text(max_size=30))
def test_any_text_is_either_an_id_or_refused_cleanly(value: str) -> None:
    if is_session_id(value):
        assert decode_session_id(value) is not None
        assert encode_session_id(*decode_session_id(value)) == value
    else:
        with pytest.raises(InvalidInput):
            check_session_id(value)


def test_encode_refuses_values_out_of_range() -> None:
    with pytest.raises(InvalidInput):
        encode_session_id(MAX_TIME_MS + 1, 0)
    with pytest.raises(InvalidInput):
        encode_session_id(0, MAX_RANDOM + 1)
    with pytest.raises(InvalidInput):
        encode_session_id(-1, 0)
