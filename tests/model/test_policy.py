"""The reset policy: durations, config words, resolution, expiry, DST, and timer consistency."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessiongate.errors import ConfigError, InvalidInput
from sessiongate.models import ChatType, EndReason
from sessiongate.policy import (
    DEFAULT_IDLE,
    Expiry,
    ResetMode,
    ResetPolicy,
    ResetRules,
    SessionFacts,
    daily_boundary,
    evaluate,
    format_duration,
    next_daily_boundary,
    next_due,
    parse_duration,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
US = timedelta(microseconds=1)

zones = (
    st.sampled_from(
        [
            ZoneInfo(name)
            for name in (
                "UTC",
                "America/New_York",
                "Europe/Berlin",
                "Australia/Lord_Howe",  # 30-minute DST shift
                "Asia/Kathmandu",  # +05:45
                "Pacific/Apia",  # skipped 2011-12-30 entirely
                "America/Santiago",
                "Africa/Casablanca",  # DST suspended during Ramadan
                "Antarctica/Troll",  # jumps two hours at once
            )
        ]
    )
    | st.timezones()
)
instants = st.datetimes(
    min_value=datetime(2005, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
durations = st.integers(min_value=1, max_value=3 * 86400).map(lambda s: timedelta(seconds=s))
policies = st.builds(
    ResetPolicy,
    mode=st.sampled_from(list(ResetMode)),
    at_hour=st.integers(min_value=0, max_value=23),
    idle=durations,
    background_veto_cap=st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=24)]),
)


TRANSITION_ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "America/Santiago",
    "Antarctica/Troll",
    "Africa/Casablanca",
)


@cache
def transitions() -> list[tuple[ZoneInfo, date, int]]:
    """(zone, local date, hour) around every offset change of some zones, 2009-2030.

    The hours run from just before the wall time the clocks leave to just after
    the one they land on: the boundaries that skipped or repeated hours affect.
    """
    found: list[tuple[ZoneInfo, date, int]] = []
    for name in TRANSITION_ZONES:
        zone = ZoneInfo(name)
        noon = datetime(2009, 1, 1, 12, tzinfo=UTC)
        while noon.year < 2031:
            later = noon + timedelta(days=1)
            if later.astimezone(zone).utcoffset() != noon.astimezone(zone).utcoffset():
                lo, hi = noon, later
                while hi - lo > timedelta(seconds=1):
                    mid = lo + (hi - lo) // 2
                    same = mid.astimezone(zone).utcoffset() == noon.astimezone(zone).utcoffset()
                    lo, hi = (mid, hi) if same else (lo, mid)
                left, landed = (lo.astimezone(zone), hi.astimezone(zone))
                for wall in (left, landed):
                    for shift in range(-1, 3):
                        moment = wall.replace(tzinfo=None) + timedelta(hours=shift)
                        found.append((zone, moment.date(), moment.hour))
            noon = later
    return found


def check_boundary(zone: tzinfo, day: date, at_hour: int) -> None:
    """The boundary of `day` is the first instant whose wall time reaches `at_hour`."""
    wall = datetime(day.year, day.month, day.day, at_hour)
    boundary = daily_boundary(day, at_hour, zone)
    assert boundary.astimezone(zone).replace(tzinfo=None) >= wall
    assert (boundary - US).astimezone(zone).replace(tzinfo=None) < wall
    # Consecutive days have increasing boundaries; only a skipped local day (its
    # boundary is the jump past it) may share its instant with a midnight boundary.
    for earlier_day in (day - timedelta(days=1), day):
        earlier = daily_boundary(earlier_day, at_hour, zone)
        later = daily_boundary(earlier_day + timedelta(days=1), at_hour, zone)
        skipped = earlier.astimezone(zone).date() != earlier_day
        assert later > earlier or (skipped and later == earlier)


@st.composite
def session_facts(draw: st.DrawFn) -> SessionFacts:
    created = draw(instants)
    last = created + draw(st.integers(min_value=0, max_value=10 * 86400).map(_seconds))
    started = draw(st.none() | st.integers(-2 * 86400, 2 * 86400).map(lambda s: last + _seconds(s)))
    return SessionFacts(
        created_at=created, last_activity_at=last, background_task_started_at=started
    )


def _seconds(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)


def facts_at(last: datetime, started: datetime | None = None) -> SessionFacts:
    return SessionFacts(
        created_at=last - timedelta(hours=1),
        last_activity_at=last,
        background_task_started_at=started,
    )


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        (" 2H ", timedelta(hours=2)),
        ("45", timedelta(minutes=45)),
        (1440, timedelta(minutes=1440)),
        (timedelta(seconds=5), timedelta(seconds=5)),
    ],
)
def test_parse_duration(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("15x", "not a duration"),
        ("1.5h", "not a duration"),
        ("", "not a duration"),
        ("-5m", "not a duration"),
        ("0s", "must be positive"),
        (0, "must be positive"),
        (-3, "must be positive"),
        (True, "got bool"),
        (1.5, "got float"),
        (None, "got NoneType"),
        ("999999999999999d", "too long"),
        ("9" * 5000 + "s", "not a duration"),
        ("\u0661\u0662m", "not a duration"),
        (10**20, "too long"),
    ],
)
def test_bad_durations_are_refused_with_the_accepted_forms(value: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        parse_duration(value, what="idle_after")
    assert "idle_after" in str(raised.value)


@given(seconds=st.integers(min_value=1, max_value=10**9))
def test_format_and_parse_round_trip(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration


# -- policies and config words ------------------------------------------------------------


def test_defaults_follow_hermes() -> None:
    policy = ResetPolicy()
    assert policy.mode is ResetMode.NONE
    assert policy.at_hour == 4
    assert policy.idle == DEFAULT_IDLE == timedelta(minutes=1440)
    assert policy.notify
    assert not policy.notifies("api_server")
    assert not policy.notifies("webhook")
    assert policy.notifies("telegram")
    assert policy.background_veto_cap == timedelta(hours=24)


def test_hermes_words() -> None:
    policy = ResetPolicy.from_config(
        {
            "mode": "both",
            "at_hour": 3,
            "idle_minutes": 90,
            "notify": False,
            "notify_exclude_platforms": ["cli"],
        }
    )
    assert policy == ResetPolicy(
        mode=ResetMode.BOTH,
        at_hour=3,
        idle=timedelta(minutes=90),
        notify=False,
        notify_exclude_platforms=frozenset({"cli"}),
    )
    assert not policy.notifies("telegram")


def test_idle_after_with_units() -> None:
    policy = ResetPolicy.from_config({"mode": "idle", "idle_after": "2h"})
    assert policy.idle == timedelta(hours=2)
    assert ResetPolicy.from_config({"idle_after": 30}).idle == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("words", "problem"),
    [
        ({"idle_minutes": 5, "idle_after": "5m"}, "not both"),
        ({"mode": "weekly"}, "not one of none, idle, daily, both"),
        ({"at_hour": 24}, "at_hour must be 0-23"),
        ({"at_hour": "4"}, "whole hour"),
        ({"idle_minutes": "90"}, "whole number"),
        ({"idle_minutes": 0}, "must be positive"),
        ({"notify": "yes"}, "true or false"),
        ({"notify_exclude_platforms": "webhook"}, "list of platform names"),
        ({"idel_minutes": 5}, "unknown setting 'idel_minutes'"),
        ({"background_veto_cap": "soon"}, "not a duration"),
    ],
)
def test_bad_words_are_config_errors(words: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        ResetPolicy.from_config(words, origin="reset_by_platform.telegram")


def test_idle_mode_needs_an_idle_duration() -> None:
    with pytest.raises(ConfigError, match="needs idle_minutes or idle_after"):
        ResetPolicy(mode=ResetMode.IDLE, idle=None)


def test_resolution_is_platform_then_chat_type_then_default() -> None:
    rules = ResetRules.from_config(
        session_reset={"mode": "daily", "at_hour": 5, "notify": False},
        reset_by_platform={"telegram": {"mode": "idle", "idle_after": "15m"}},
        reset_by_type={"group": {"mode": "none"}, "dm": {"idle_minutes": 60, "mode": "both"}},
    )
    telegram_group = rules.resolve("telegram", ChatType.GROUP)
    assert telegram_group.mode is ResetMode.IDLE
    assert telegram_group.idle == timedelta(minutes=15)
    # Words an override leaves out come from session_reset.
    assert telegram_group.at_hour == 5
    assert not telegram_group.notify
    assert telegram_group.origin == "reset_by_platform.telegram"
    assert rules.resolve("slack", "group").mode is ResetMode.NONE
    assert rules.resolve("slack", ChatType.GROUP).origin == "reset_by_type.group"
    assert rules.resolve("slack", ChatType.DM).idle == timedelta(minutes=60)
    assert rules.resolve("slack", ChatType.CHANNEL) == rules.default
    assert rules.default.origin == "session_reset"


def test_rules_built_directly_name_their_sections() -> None:
    rules = ResetRules(
        by_platform={"webchat": ResetPolicy(mode=ResetMode.DAILY)},
        by_type={"thread": ResetPolicy(mode=ResetMode.IDLE)},
    )
    assert rules.resolve("webchat", ChatType.DM).origin == "reset_by_platform.webchat"
    assert rules.resolve("x", ChatType.THREAD).origin == "reset_by_type.thread"
    with pytest.raises(ConfigError, match="'forum' is not a chat type"):
        ResetRules(by_type={"forum": ResetPolicy()})


def test_the_default_rules_never_reset() -> None:
    rules = ResetRules()
    facts = facts_at(datetime(2020, 1, 1, tzinfo=UTC))
    policy = rules.resolve("telegram", ChatType.DM)
    assert evaluate(facts, policy, datetime(2030, 1, 1, tzinfo=UTC), UTC) is None
    assert next_due(facts, policy, UTC) is None


# -- expiry -------------------------------------------------------------------------------


def test_idle_expires_exactly_after_the_idle_duration() -> None:
    last = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    policy = ResetPolicy(mode=ResetMode.IDLE, idle=timedelta(minutes=30))
    facts = facts_at(last)
    assert evaluate(facts, policy, last + timedelta(minutes=30) - US, UTC) is None
    expiry = evaluate(facts, policy, last + timedelta(minutes=30), UTC)
    assert expiry is not None
    assert expiry.reason is EndReason.IDLE
    assert expiry.due_at == last + timedelta(minutes=30)
    assert "session_reset" in expiry.detail
    assert "idle after 30m" in expiry.detail


def test_daily_expires_at_the_first_boundary_after_last_activity() -> None:
    policy = ResetPolicy(mode=ResetMode.DAILY, at_hour=4, origin="reset_by_type.dm")
    last = datetime(2026, 6, 1, 3, 59, tzinfo=BERLIN)
    boundary = datetime(2026, 6, 1, 4, 0, tzinfo=BERLIN)
    assert evaluate(facts_at(last), policy, boundary - US, BERLIN) is None
    expiry = evaluate(facts_at(last), policy, boundary, BERLIN)
    assert expiry == Expiry(EndReason.DAILY, boundary, expiry.detail if expiry else "")
    assert expiry is not None
    assert "reset_by_type.dm" in expiry.detail
    assert "04:00 Europe/Berlin" in expiry.detail
    assert "2026-06-01T04:00:00+02:00" in expiry.detail
    # Activity after the boundary waits for the next day's.
    later = facts_at(datetime(2026, 6, 1, 4, 1, tzinfo=BERLIN))
    assert evaluate(later, policy, datetime(2026, 6, 2, 3, 59, tzinfo=BERLIN), BERLIN) is None
    assert next_due(later, policy, BERLIN) == datetime(2026, 6, 2, 4, 0, tzinfo=BERLIN)


def test_both_reports_whichever_came_first() -> None:
    policy = ResetPolicy(mode=ResetMode.BOTH, at_hour=4, idle=timedelta(hours=2))
    night = facts_at(datetime(2026, 6, 1, 3, 0, tzinfo=UTC))
    expiry = evaluate(night, policy, datetime(2026, 6, 1, 6, 0, tzinfo=UTC), UTC)
    assert expiry is not None
    assert expiry.reason is EndReason.DAILY
    day = facts_at(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    expiry = evaluate(day, policy, datetime(2026, 6, 2, 6, 0, tzinfo=UTC), UTC)
    assert expiry is not None
    assert expiry.reason is EndReason.IDLE


def test_a_background_task_vetoes_until_the_cap() -> None:
    policy = ResetPolicy(mode=ResetMode.IDLE, idle=timedelta(hours=1))
    last = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    started = last + timedelta(minutes=10)
    facts = facts_at(last, started=started)
    assert evaluate(facts, policy, last + timedelta(hours=5), UTC) is None
    cap_reached = started + timedelta(hours=24)
    assert next_due(facts, policy, UTC) == cap_reached
    assert evaluate(facts, policy, cap_reached - US, UTC) is None
    expiry = evaluate(facts, policy, cap_reached, UTC)
    assert expiry is not None
    assert expiry.due_at == last + timedelta(hours=1)
    assert "veto cap of 1d" in expiry.detail
    # Without the task, the same session expires on time.
    assert evaluate(facts_at(last), policy, last + timedelta(hours=5), UTC) is not None


def test_an_old_background_task_does_not_veto() -> None:
    policy = ResetPolicy(mode=ResetMode.IDLE, idle=timedelta(hours=1))
    last = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    facts = facts_at(last, started=last - timedelta(days=2))
    assert next_due(facts, policy, UTC) == last + timedelta(hours=1)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        SessionFacts(created_at=datetime(2026, 1, 1), last_activity_at=datetime(2026, 1, 1))
    facts = facts_at(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidInput, match="now must be a timezone-aware datetime"):
        evaluate(facts, ResetPolicy(mode=ResetMode.DAILY), datetime(2026, 1, 2), UTC)


# -- daylight saving time -----------------------------------------------------------------


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_transition_days_are_what_the_tests_assume() -> None:
    def offsets(zone: ZoneInfo, before: datetime, after: datetime) -> tuple[object, object]:
        return before.astimezone(zone).utcoffset(), after.astimezone(zone).utcoffset()

    hour = timedelta(hours=1)
    ny_spring = offsets(NEW_YORK, _utc(2026, 3, 8, 7) - US, _utc(2026, 3, 8, 7))
    assert ny_spring == (-5 * hour, -4 * hour)
    assert offsets(NEW_YORK, _utc(2026, 11, 1, 6) - US, _utc(2026, 11, 1, 6)) == (
        -4 * hour,
        -5 * hour,
    )
    assert offsets(BERLIN, _utc(2026, 3, 29, 1) - US, _utc(2026, 3, 29, 1)) == (hour, 2 * hour)
    assert offsets(BERLIN, _utc(2026, 10, 25, 1) - US, _utc(2026, 10, 25, 1)) == (2 * hour, hour)


@pytest.mark.parametrize(
    ("zone", "day", "at_hour", "expected"),
    [
        # Ordinary hours on transition days.
        (NEW_YORK, date(2026, 3, 8), 4, _utc(2026, 3, 8, 8)),  # 04:00 EDT
        (NEW_YORK, date(2026, 11, 1), 4, _utc(2026, 11, 1, 9)),  # 04:00 EST
        # Spring forward: 02:00 does not exist; the boundary is the jump (03:00 EDT).
        (NEW_YORK, date(2026, 3, 8), 2, _utc(2026, 3, 8, 7)),
        (BERLIN, date(2026, 3, 29), 2, _utc(2026, 3, 29, 1)),
        # Fall back: the repeated hour's boundary is its first occurrence.
        (NEW_YORK, date(2026, 11, 1), 1, _utc(2026, 11, 1, 5)),  # 01:00 EDT, not 01:00 EST
        (BERLIN, date(2026, 10, 25), 2, _utc(2026, 10, 25, 0)),  # 02:00 CEST, not 02:00 CET
        # Lord Howe moves by 30 minutes at 02:00: the jump lands on 02:30.
        (ZoneInfo("Australia/Lord_Howe"), date(2026, 10, 4), 2, _utc(2026, 10, 3, 15, 30)),
        # Samoa skipped 30 December 2011: that day's boundary is the jump to the 31st.
        (ZoneInfo("Pacific/Apia"), date(2011, 12, 30), 4, _utc(2011, 12, 30, 10)),
        (ZoneInfo("Pacific/Apia"), date(2011, 12, 31), 4, _utc(2011, 12, 30, 14)),
    ],
)
def test_daily_boundary_on_transition_days(
    zone: ZoneInfo, day: date, at_hour: int, expected: datetime
) -> None:
    assert daily_boundary(day, at_hour, zone) == expected


def test_boundaries_are_23_and_25_hours_apart_around_transitions() -> None:
    spring = daily_boundary(date(2026, 3, 8), 4, NEW_YORK) - daily_boundary(
        date(2026, 3, 7), 4, NEW_YORK
    )
    autumn = daily_boundary(date(2026, 10, 25), 4, BERLIN) - daily_boundary(
        date(2026, 10, 24), 4, BERLIN
    )
    assert (spring, autumn) == (timedelta(hours=23), timedelta(hours=25))


def test_the_repeated_hour_resets_once() -> None:
    policy = ResetPolicy(mode=ResetMode.DAILY, at_hour=1)
    # Active at 01:30 EDT (after the boundary at 01:00 EDT) ...
    facts = facts_at(_utc(2026, 11, 1, 5, 30))
    # ... the second 01:00 (EST, 06:00 UTC) is no boundary ...
    assert evaluate(facts, policy, _utc(2026, 11, 1, 6, 30), NEW_YORK) is None
    # ... the next one is 01:00 EST on the next day.
    assert next_due(facts, policy, NEW_YORK) == _utc(2026, 11, 2, 6)
    # Activity just before the first 01:00 is reset by it.
    before = facts_at(_utc(2026, 11, 1, 4, 59))
    expiry = evaluate(before, policy, _utc(2026, 11, 1, 5), NEW_YORK)
    assert expiry is not None
    assert expiry.due_at == _utc(2026, 11, 1, 5)


def test_the_skipped_hour_resets_at_the_jump() -> None:
    policy = ResetPolicy(mode=ResetMode.DAILY, at_hour=2)
    facts = facts_at(datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN))
    assert next_due(facts, policy, BERLIN) == _utc(2026, 3, 29, 1)
    assert evaluate(facts, policy, _utc(2026, 3, 29, 1) - US, BERLIN) is None
    expiry = evaluate(facts, policy, _utc(2026, 3, 29, 1), BERLIN)
    assert expiry is not None
    assert "2026-03-29T03:00:00+02:00" in expiry.detail


# -- properties ---------------------------------------------------------------------------


@given(facts=session_facts(), policy=policies, zone=zones, offset_us=st.integers(0, 10**12))
def test_next_due_agrees_with_evaluate(
    facts: SessionFacts, policy: ResetPolicy, zone: tzinfo, offset_us: int
) -> None:
    due = next_due(facts, policy, zone)
    if due is None:
        assert policy.mode is ResetMode.NONE
        later = facts.last_active + timedelta(microseconds=offset_us)
        assert evaluate(facts, policy, later, zone) is None
        return
    assert evaluate(facts, policy, due - US, zone) is None
    at_due = evaluate(facts, policy, due, zone)
    assert at_due is not None
    assert at_due.due_at <= due
    assert evaluate(facts, policy, due + timedelta(microseconds=offset_us), zone) is not None


@given(facts=session_facts(), policy=policies, zone=zones, now=instants, step=durations)
def test_once_expired_always_expired(
    facts: SessionFacts, policy: ResetPolicy, zone: tzinfo, now: datetime, step: timedelta
) -> None:
    if evaluate(facts, policy, now, zone) is not None:
        assert evaluate(facts, policy, now + step, zone) is not None


@given(facts=session_facts(), policy=policies, zone=zones, now=instants)
def test_expiry_reasons_match_the_mode(
    facts: SessionFacts, policy: ResetPolicy, zone: tzinfo, now: datetime
) -> None:
    expiry = evaluate(facts, policy, now, zone)
    if expiry is None:
        return
    allowed = {
        ResetMode.IDLE: {EndReason.IDLE},
        ResetMode.DAILY: {EndReason.DAILY},
        ResetMode.BOTH: {EndReason.IDLE, EndReason.DAILY},
    }[policy.mode]
    assert expiry.reason in allowed
    assert facts.last_active < expiry.due_at <= now
    assert policy.origin in expiry.detail


@given(day=st.dates(date(1990, 1, 1), date(2037, 12, 31)), at_hour=st.integers(0, 23), zone=zones)
def test_one_boundary_per_local_day_at_the_first_crossing(
    day: date, at_hour: int, zone: tzinfo
) -> None:
    check_boundary(zone, day, at_hour)


def test_boundaries_around_every_transition() -> None:
    cases = transitions()
    assert len({zone for zone, _, _ in cases}) == len(TRANSITION_ZONES)
    for zone, day, at_hour in cases:
        check_boundary(zone, day, at_hour)


@given(after=instants, at_hour=st.integers(0, 23), zone=zones)
def test_next_daily_boundary_skips_none(after: datetime, at_hour: int, zone: tzinfo) -> None:
    found = next_daily_boundary(after, at_hour, zone)
    assert found > after
    local_day = after.astimezone(zone).date()
    for shift in range(-2, 3):
        other = daily_boundary(local_day + timedelta(days=shift), at_hour, zone)
        assert other <= after or other >= found
