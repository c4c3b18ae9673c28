"""Session keys: Hermes shapes, injectivity over lanes, safe characters, clear refusals."""

from __future__ import annotations

import dataclasses
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sessiongate.errors import ConfigError, InvalidInput
from sessiongate.keys import MAX_PART_CHARS, KeyPolicy, decode_part, encode_part, session_key
from sessiongate.models import ChatType, Source

# Any storable text: no NUL, no lone surrogates.
any_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=12,
)
# A small pool of tricky ids, so that near-collisions (shared prefixes, separators
# inside ids, ids that look escaped) are drawn often.
tricky = st.sampled_from(
    ["", "a", "b", "a:b", "b:c", ":", "a%3Ab", "%", "..", ".", "a.b", "a/b", "~a", "a b", "7"]
)
plain_text = st.text(alphabet="abcXYZ0189-_@+", min_size=1, max_size=10) | st.from_regex(
    r"[a-z0-9]{1,5}\.[0-9]{1,5}", fullmatch=True
)

policies = st.builds(
    KeyPolicy,
    profile=st.sampled_from(["main", "coder", "a:b"]),
    group_sessions_per_user=st.booleans(),
    thread_sessions_per_user=st.booleans(),
)


def sources(ids: st.SearchStrategy[str]) -> st.SearchStrategy[Source]:
    optional = st.none() | ids
    return st.builds(
        Source,
        platform=st.sampled_from(["telegram", "slack"]) | ids.filter(bool),
        chat_id=ids,
        chat_type=st.sampled_from(list(ChatType)),
        user_id=optional,
        user_name=st.none() | any_text,
        thread_id=optional,
    )


def lane(source: Source, policy: KeyPolicy) -> tuple[object, ...] | None:
    """Which conversation a source belongs to, written independently of the key grammar.

    None for a source that names no conversation (the key is refused).
    """
    if not source.platform:
        return None
    user = source.user_id or None
    thread = source.thread_id or None
    if source.chat_type is ChatType.DM:
        who = source.chat_id or user
        return None if who is None else ("dm", source.platform, who, thread)
    if not source.chat_id:
        return None
    if source.chat_type is ChatType.THREAD:
        thread = thread or source.chat_id
    if thread is not None:
        per_user = policy.group_sessions_per_user and policy.thread_sessions_per_user
        return ("thread", source.platform, source.chat_id, thread, user if per_user else None)
    per_user = policy.group_sessions_per_user
    return (source.chat_type, source.platform, source.chat_id, user if per_user else None)


def key_or_none(source: Source, policy: KeyPolicy) -> str | None:
    try:
        return session_key(source, policy)
    except InvalidInput:
        return None


# -- Hermes shapes ------------------------------------------------------------------------


DEFAULT = KeyPolicy()


@pytest.mark.parametrize(
    ("source", "policy", "expected"),
    [
        (Source("telegram", "123456789"), DEFAULT, "agent:main:telegram:dm:123456789"),
        (
            Source("slack", "D0123", thread_id="1712345678.123456"),
            DEFAULT,
            "agent:main:slack:dm:D0123:1712345678.123456",
        ),
        (Source("api_server", "", user_id="u-1"), DEFAULT, "agent:main:api_server:dm:u-1"),
        (
            Source("telegram", "-1001234567890", ChatType.GROUP, user_id="42"),
            DEFAULT,
            "agent:main:telegram:group:-1001234567890:42",
        ),
        (
            Source("telegram", "-1001234567890", ChatType.GROUP, user_id="42"),
            KeyPolicy(group_sessions_per_user=False),
            "agent:main:telegram:group:-1001234567890",
        ),
        (
            Source("discord", "555", ChatType.CHANNEL, user_id="user@example.com"),
            DEFAULT,
            "agent:main:discord:channel:555:user@example.com",
        ),
        (
            Source("discord", "777", ChatType.THREAD, user_id="9", thread_id="777"),
            DEFAULT,
            "agent:main:discord:thread:777:777",
        ),
        (
            Source("discord", "777", ChatType.THREAD, user_id="9", thread_id="777"),
            KeyPolicy(thread_sessions_per_user=True),
            "agent:main:discord:thread:777:777:9",
        ),
        (Source("telegram", "1"), KeyPolicy(profile="coder"), "agent:coder:telegram:dm:1"),
    ],
)
def test_hermes_shapes(source: Source, policy: KeyPolicy, expected: str) -> None:
    assert session_key(source, policy) == expected


@given(
    platform=plain_text,
    chat=plain_text,
    user=plain_text,
    thread=st.none() | plain_text,
    group_type=st.sampled_from([ChatType.GROUP, ChatType.CHANNEL]),
    policy=policies.filter(lambda p: p.profile != "a:b"),
)
def test_plain_ids_keep_the_hermes_grammar(
    platform: str,
    chat: str,
    user: str,
    thread: str | None,
    group_type: ChatType,
    policy: KeyPolicy,
) -> None:
    head = f"agent:{policy.profile}:{platform}"
    dm = session_key(Source(platform, chat, thread_id=thread), policy)
    assert dm == f"{head}:dm:{chat}" + (f":{thread}" if thread else "")
    group = session_key(Source(platform, chat, group_type, user_id=user), policy)
    suffix = f":{user}" if policy.group_sessions_per_user else ""
    assert group == f"{head}:{group_type.value}:{chat}{suffix}"
    in_thread = session_key(Source(platform, chat, ChatType.THREAD, user, thread_id=user), policy)
    per_user = policy.group_sessions_per_user and policy.thread_sessions_per_user
    assert in_thread == f"{head}:thread:{chat}:{user}" + (f":{user}" if per_user else "")


def test_group_threads_are_keyed_apart_from_per_user_lanes() -> None:
    # Hermes writes both of these as `agent:main:telegram:group:-100:144`.
    topic = Source("telegram", "-100", ChatType.GROUP, user_id="9", thread_id="144")
    member = Source("telegram", "-100", ChatType.GROUP, user_id="144")
    assert session_key(topic, DEFAULT) == "agent:main:telegram:thread:-100:144"
    assert session_key(member, DEFAULT) == "agent:main:telegram:group:-100:144"


def test_a_thread_is_one_lane_whatever_chat_type_carries_it() -> None:
    as_group = Source("slack", "C1", ChatType.GROUP, user_id="U1", thread_id="17.5")
    as_thread = Source("slack", "C1", ChatType.THREAD, user_id="U2", thread_id="17.5")
    assert session_key(as_group, DEFAULT) == session_key(as_thread, DEFAULT)


def test_threads_are_shared_and_groups_per_user_by_default() -> None:
    alice = Source("telegram", "-100", ChatType.GROUP, user_id="alice", thread_id="5")
    bob = dataclasses.replace(alice, user_id="bob")
    assert session_key(alice, DEFAULT) == session_key(bob, DEFAULT)
    no_thread = KeyPolicy()
    alice_main = dataclasses.replace(alice, thread_id=None)
    bob_main = dataclasses.replace(bob, thread_id=None)
    assert session_key(alice_main, no_thread) != session_key(bob_main, no_thread)


# -- properties ---------------------------------------------------------------------------


@given(source=sources(any_text | tricky), policy=policies)
def test_deterministic_and_independent_of_the_user_name(source: Source, policy: KeyPolicy) -> None:
    key = key_or_none(source, policy)
    renamed = dataclasses.replace(source, user_name="someone else")
    assert key_or_none(dataclasses.replace(source), policy) == key
    assert key_or_none(renamed, policy) == key
    assert (key is None) == (lane(source, policy) is None)


@given(first=sources(tricky), second=sources(tricky), policy=policies)
@example(
    first=Source("t", "c", ChatType.GROUP, user_id="x"),
    second=Source("t", "c", ChatType.GROUP, user_id="u", thread_id="x"),
    policy=KeyPolicy(),
)
@example(
    first=Source("t", "a:b", ChatType.THREAD, thread_id="c"),
    second=Source("t", "a", ChatType.THREAD, thread_id="b:c"),
    policy=KeyPolicy(),
)
def test_same_key_exactly_for_the_same_lane(
    first: Source, second: Source, policy: KeyPolicy
) -> None:
    lanes = lane(first, policy), lane(second, policy)
    if None in lanes:
        return
    same_lane = lanes[0] == lanes[1]
    assert (session_key(first, policy) == session_key(second, policy)) == same_lane


@given(first=sources(any_text | tricky), second=sources(any_text | tricky), policy=policies)
def test_injective_over_arbitrary_text(first: Source, second: Source, policy: KeyPolicy) -> None:
    lanes = lane(first, policy), lane(second, policy)
    if None in lanes or lanes[0] == lanes[1]:
        return
    assert session_key(first, policy) != session_key(second, policy)


@given(source=sources(any_text | tricky), policy=policies)
@example(source=Source("../..", "..", user_id="a/b\\c"), policy=KeyPolicy())
@example(source=Source("t", ".\x1f.", thread_id="\u202e\u2028\x85"), policy=KeyPolicy())
def test_keys_are_safe(source: Source, policy: KeyPolicy) -> None:
    key = key_or_none(source, policy)
    if key is None:
        return
    assert "/" not in key
    assert "\\" not in key
    assert ".." not in key
    assert not any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in key)
    assert not any(char.isspace() for char in key)


@given(part=any_text | tricky)
def test_parts_round_trip_and_never_hold_a_separator(part: str) -> None:
    encoded = encode_part(part)
    assert decode_part(encoded) == part
    assert ":" not in encoded
    assert ".." not in encoded


@given(part=plain_text)
def test_plain_ids_are_unchanged(part: str) -> None:
    assert encode_part(part) == part


@given(source=sources(any_text | tricky), policy=policies)
def test_key_fields_decode_to_the_source(source: Source, policy: KeyPolicy) -> None:
    key = key_or_none(source, policy)
    found = lane(source, policy)
    if key is None or found is None:
        return
    prefix, profile, platform, chat_type, *rest = [decode_part(p) for p in key.split(":")]
    assert (prefix, profile, platform) == ("agent", policy.profile, source.platform)
    assert chat_type == found[0]
    assert tuple(rest) == tuple(v for v in found[2:] if v is not None)


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (Source("", "1"), "platform is empty"),
        (Source("telegram", ""), "neither a chat id nor a user id"),
        (Source("telegram", "", ChatType.GROUP, user_id="1"), "has no chat id"),
        (Source("telegram", "a\x00b"), "NUL"),
        (Source("telegram", "1", user_id="\ud800", chat_type=ChatType.GROUP), "surrogate"),
        (Source("telegram", "x" * (MAX_PART_CHARS + 1)), "over the maximum"),
        (Source("telegram", "1", chat_type="forum"), "not one of dm"),  # type: ignore[arg-type]
        (Source("telegram", 12345), "must be text"),  # type: ignore[arg-type]
    ],
)
def test_bad_sources_are_refused_with_a_clear_message(source: Source, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        session_key(source, DEFAULT)


@pytest.mark.parametrize("profile", ["", "a\x00", "\udc80"])
def test_a_bad_profile_is_a_config_error(profile: str) -> None:
    with pytest.raises(ConfigError, match="profile"):
        KeyPolicy(profile=profile)


def test_a_profile_is_escaped_like_any_part() -> None:
    key = session_key(Source("telegram", "1"), KeyPolicy(profile="team/a"))
    assert key == "agent:team%2Fa:telegram:dm:1"
