"""The reset policy: when a session expires by idleness or at the daily boundary.

One pure function, `evaluate(facts, policy, now, tz)`, decides whether a session
has expired; `next_due(facts, policy, tz)` says when it first will, for durable
timers. The engine uses the first lazily (on the next inbound message) and the
timers use the second, so both paths always agree.

- `idle`: the session expires `idle` after its last activity.
- `daily`: the session expires at the first daily boundary after its last
  activity. The boundary is `at_hour`:00 local time in the configured zone,
  once per local date: when the clocks skip over `at_hour` (spring forward) it
  is the instant of the jump; when `at_hour` happens twice (fall back) it is the
  first time.
- `both`: whichever comes first.

A background task the session started vetoes its reset while the task is
younger than `background_veto_cap`.

Configuration uses the Hermes words (`session_reset`, `reset_by_platform`,
`reset_by_type`, `mode`, `at_hour`, `idle_minutes`, `notify`,
`notify_exclude_platforms`), plus `idle_after` with units (`90s`, `15m`, `2h`,
`1d`) and `background_veto_cap`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sessiongate.errors import ConfigError, InvalidInput
from sessiongate.models import ChatType, EndReason


class ResetMode(StrEnum):
    """Which expiries a policy applies. `none` (the default) never resets."""

    NONE = "none"
    IDLE = "idle"
    DAILY = "daily"
    BOTH = "both"


DEFAULT_IDLE = timedelta(minutes=1440)
DEFAULT_BACKGROUND_VETO_CAP = timedelta(hours=24)
DEFAULT_NOTIFY_EXCLUDE = frozenset({"api_server", "webhook"})
DEFAULT_ORIGIN = "session_reset"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*([0-9]{1,15})\s*([smhd]?)\s*", re.IGNORECASE)
_DURATION_HELP = "use a whole number with a unit s, m, h or d (90s, 15m, 2h, 1d), or minutes"
_US = timedelta(microseconds=1)


def parse_duration(value: object, *, what: str = "duration") -> timedelta:
    """A positive duration from `90s`, `15m`, `2h`, `1d`, or a whole number of minutes.

    Raises `ConfigError` naming `what` and the accepted forms.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        result = _seconds(value * 60, value, what)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ConfigError(f"{what} {value!r} is not a duration: {_DURATION_HELP}")
        result = _seconds(int(match.group(1)) * _UNITS[match.group(2).lower() or "m"], value, what)
    else:
        raise ConfigError(
            f"{what} must be a duration, got {type(value).__name__}: {_DURATION_HELP}"
        )
    if result <= timedelta(0):
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return result


def _seconds(seconds: int, value: object, what: str) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ConfigError(f"{what} {value!r} is too long") from None


def format_duration(duration: timedelta) -> str:
    """The shortest `parse_duration` spelling of a whole-second duration (`1d`, `90s`)."""
    if duration % timedelta(seconds=1):
        return str(duration)
    seconds = duration // timedelta(seconds=1)
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class ResetPolicy:
    """When sessions reset, and whether the user is told."""

    mode: ResetMode = ResetMode.NONE
    # Local hour (0-23) of the daily boundary.
    at_hour: int = 4
    idle: timedelta | None = DEFAULT_IDLE
    # Tell the user "session automatically reset" (except on these platforms).
    notify: bool = True
    notify_exclude_platforms: frozenset[str] = DEFAULT_NOTIFY_EXCLUDE
    background_veto_cap: timedelta = DEFAULT_BACKGROUND_VETO_CAP
    # The configuration section this policy came from, named in expiry details.
    origin: str = DEFAULT_ORIGIN

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", ResetMode(self.mode))
        except (ValueError, TypeError):
            raise ConfigError(
                f"{self.origin}: mode {self.mode!r} is not one of none, idle, daily, both"
            ) from None
        if isinstance(self.at_hour, bool) or not isinstance(self.at_hour, int):
            raise ConfigError(
                f"{self.origin}: at_hour must be a whole hour 0-23, got {self.at_hour!r}"
            )
        if not 0 <= self.at_hour <= 23:
            raise ConfigError(f"{self.origin}: at_hour must be 0-23, got {self.at_hour}")
        if self.idle is not None and self.idle <= timedelta(0):
            raise ConfigError(f"{self.origin}: the idle duration must be positive")
        if self.idle is None and self.mode in (ResetMode.IDLE, ResetMode.BOTH):
            raise ConfigError(f"{self.origin}: mode {self.mode} needs idle_minutes or idle_after")
        if self.background_veto_cap < timedelta(0):
            raise ConfigError(f"{self.origin}: background_veto_cap must not be negative")
        object.__setattr__(
            self, "notify_exclude_platforms", frozenset(self.notify_exclude_platforms)
        )

    @property
    def uses_idle(self) -> bool:
        return self.mode in (ResetMode.IDLE, ResetMode.BOTH)

    @property
    def uses_daily(self) -> bool:
        return self.mode in (ResetMode.DAILY, ResetMode.BOTH)

    def notifies(self, platform: str) -> bool:
        """Whether a reset on `platform` should be announced to the user."""
        return self.notify and platform not in self.notify_exclude_platforms

    @classmethod
    def from_config(
        cls,
        words: Mapping[str, Any] | None,
        *,
        base: ResetPolicy | None = None,
        origin: str = DEFAULT_ORIGIN,
    ) -> ResetPolicy:
        """A policy from Hermes config words; words not given are taken from `base`.

        `idle_minutes` (Hermes) and `idle_after` (with units) are two spellings of
        the same setting: give one. Unknown words are refused, so typos surface.
        """
        policy = replace(base or cls(), origin=origin)
        if words is None:
            return policy
        if not isinstance(words, Mapping):
            raise ConfigError(f"{origin} must be a mapping of settings, got {type(words).__name__}")
        unknown = sorted(set(words) - _POLICY_WORDS)
        if unknown:
            raise ConfigError(
                f"{origin}: unknown setting {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(_POLICY_WORDS))}"
            )
        if "idle_minutes" in words and "idle_after" in words:
            raise ConfigError(f"{origin}: give idle_minutes or idle_after, not both")
        changes: dict[str, Any] = {}
        if "mode" in words:
            changes["mode"] = "none" if words["mode"] is None else words["mode"]
        if "at_hour" in words:
            changes["at_hour"] = words["at_hour"]
        if "idle_minutes" in words:
            minutes = words["idle_minutes"]
            if isinstance(minutes, bool) or not isinstance(minutes, int):
                raise ConfigError(f"{origin}: idle_minutes must be a whole number, got {minutes!r}")
            changes["idle"] = parse_duration(minutes, what=f"{origin}.idle_minutes")
        if "idle_after" in words:
            changes["idle"] = parse_duration(words["idle_after"], what=f"{origin}.idle_after")
        if "notify" in words:
            if not isinstance(words["notify"], bool):
                raise ConfigError(f"{origin}: notify must be true or false")
            changes["notify"] = words["notify"]
        if "notify_exclude_platforms" in words:
            changes["notify_exclude_platforms"] = _names(
                words["notify_exclude_platforms"], f"{origin}.notify_exclude_platforms"
            )
        if "background_veto_cap" in words:
            changes["background_veto_cap"] = parse_duration(
                words["background_veto_cap"], what=f"{origin}.background_veto_cap"
            )
        return replace(policy, **changes)


_POLICY_WORDS = frozenset(
    {
        "mode",
        "at_hour",
        "idle_minutes",
        "idle_after",
        "notify",
        "notify_exclude_platforms",
        "background_veto_cap",
    }
)


def _names(value: object, what: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ConfigError(f"{what} must be a list of platform names")
    if not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{what} must contain only platform names")
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class ResetRules:
    """The reset policy of each session: per platform, else per chat type, else the default."""

    default: ResetPolicy = field(default_factory=ResetPolicy)
    by_platform: Mapping[str, ResetPolicy] = field(default_factory=dict)
    by_type: Mapping[str, ResetPolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        platforms = {
            name: replace(policy, origin=f"reset_by_platform.{name}")
            for name, policy in self.by_platform.items()
        }
        types: dict[str, ResetPolicy] = {}
        for name, policy in self.by_type.items():
            try:
                chat_type = ChatType(name)
            except ValueError:
                raise ConfigError(
                    f"reset_by_type: {name!r} is not a chat type (dm, group, channel, thread)"
                ) from None
            types[chat_type] = replace(policy, origin=f"reset_by_type.{chat_type.value}")
        object.__setattr__(self, "by_platform", MappingProxyType(platforms))
        object.__setattr__(self, "by_type", MappingProxyType(types))

    def resolve(self, platform: str, chat_type: ChatType | str) -> ResetPolicy:
        """The policy for a session on `platform` in a chat of `chat_type`."""
        policy = self.by_platform.get(platform)
        if policy is None:
            try:
                policy = self.by_type.get(ChatType(chat_type))
            except ValueError:
                policy = None
        return self.default if policy is None else policy

    @classmethod
    def from_config(
        cls,
        session_reset: Mapping[str, Any] | None = None,
        reset_by_platform: Mapping[str, Any] | None = None,
        reset_by_type: Mapping[str, Any] | None = None,
    ) -> ResetRules:
        """Rules from the Hermes config sections of the same names.

        An override names only what differs: the words it leaves out come from
        `session_reset`.
        """
        default = ResetPolicy.from_config(session_reset)
        sections = (("reset_by_platform", reset_by_platform), ("reset_by_type", reset_by_type))
        parsed: list[dict[str, ResetPolicy]] = []
        for section, overrides in sections:
            if overrides is not None and not isinstance(overrides, Mapping):
                raise ConfigError(f"{section} must be a mapping of names to settings")
            parsed.append(
                {
                    str(name): ResetPolicy.from_config(
                        words, base=default, origin=f"{section}.{name}"
                    )
                    for name, words in (overrides or {}).items()
                }
            )
        by_platform, by_type = parsed
        return cls(default=default, by_platform=by_platform, by_type=by_type)


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What the policy needs to know about a session (all timezone-aware)."""

    created_at: datetime
    last_activity_at: datetime
    # When the oldest still-running background task of the session started, if any.
    background_task_started_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware(self.created_at, "created_at")
        _require_aware(self.last_activity_at, "last_activity_at")
        if self.background_task_started_at is not None:
            _require_aware(self.background_task_started_at, "background_task_started_at")

    @property
    def last_active(self) -> datetime:
        """The later of creation and last activity: where idleness is counted from."""
        return max(self.created_at, self.last_activity_at)


@dataclass(frozen=True, slots=True)
class Expiry:
    """Why a session has expired: `idle` or `daily`, the instant it did, and a readable detail."""

    reason: EndReason
    due_at: datetime
    detail: str


def evaluate(facts: SessionFacts, policy: ResetPolicy, now: datetime, tz: tzinfo) -> Expiry | None:
    """The expiry of a session at `now` under `policy`, or None while it is live.

    Daily boundaries are computed in `tz`. A background task younger than the
    policy's veto cap keeps the session live. Once expired, a session stays
    expired for every later `now` (with the same facts).
    """
    _require_aware(now, "now")
    fired = [(due, reason) for due, reason in _candidates(facts, policy, tz) if due <= now]
    if not fired or _vetoed(facts, policy, now):
        return None
    due, reason = fired[0]
    last = facts.last_active.isoformat()
    if reason is EndReason.IDLE:
        idle = format_duration(due - facts.last_active)
        detail = (
            f"{policy.origin} (mode {policy.mode}, idle after {idle}): "
            f"no activity since {last}, expired at {due.isoformat()}"
        )
    else:
        detail = (
            f"{policy.origin} (mode {policy.mode}, daily at {policy.at_hour:02d}:00 "
            f"{_zone_name(tz)}): boundary {due.astimezone(tz).isoformat()} passed "
            f"since last activity at {last}"
        )
    started = facts.background_task_started_at
    if started is not None:
        detail += (
            f"; background task running since {started.isoformat()} is past the veto cap "
            f"of {format_duration(policy.background_veto_cap)}"
        )
    return Expiry(reason=reason, due_at=due, detail=detail)


def next_due(facts: SessionFacts, policy: ResetPolicy, tz: tzinfo) -> datetime | None:
    """The first instant at which `evaluate` returns an expiry, or None if it never will.

    For every `now` before it `evaluate` returns None; at it and after, an expiry.
    """
    candidates = _candidates(facts, policy, tz)
    if not candidates:
        return None
    due = candidates[0][0]
    started = facts.background_task_started_at
    if started is not None:
        due = max(due, started + policy.background_veto_cap)
    return due


def daily_boundary(day: date, at_hour: int, tz: tzinfo) -> datetime:
    """The daily boundary of local date `day`, in UTC.

    It is the first instant at which the local wall clock shows `day` at
    `at_hour`:00 or later: the first of two when the hour repeats, the jump
    itself when the clocks skip the hour.
    """
    wall = datetime.combine(day, time(at_hour))
    # fold=0 picks the earlier instant of a repeated wall time.
    first = wall.replace(tzinfo=tz).astimezone(UTC)
    if _wall(first, tz) == wall:
        return first
    # The wall time does not exist: the two folds bracket the jump over it.
    other = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = sorted((first, other))
    while hi - lo > _US:
        mid = lo + (hi - lo) // 2
        if _wall(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def next_daily_boundary(after: datetime, at_hour: int, tz: tzinfo) -> datetime:
    """The first daily boundary strictly after `after`."""
    _require_aware(after, "after")
    day = after.astimezone(tz).date() - timedelta(days=1)
    while True:
        boundary = daily_boundary(day, at_hour, tz)
        if boundary > after:
            return boundary
        day += timedelta(days=1)


def _candidates(
    facts: SessionFacts, policy: ResetPolicy, tz: tzinfo
) -> list[tuple[datetime, EndReason]]:
    """When each expiry of the policy falls due, earliest first (idle first on a tie)."""
    found: list[tuple[datetime, EndReason]] = []
    if policy.uses_idle and policy.idle is not None:
        found.append((facts.last_active + policy.idle, EndReason.IDLE))
    if policy.uses_daily:
        found.append((next_daily_boundary(facts.last_active, policy.at_hour, tz), EndReason.DAILY))
    found.sort(key=lambda candidate: candidate[0])
    return found


def _vetoed(facts: SessionFacts, policy: ResetPolicy, now: datetime) -> bool:
    started = facts.background_task_started_at
    return started is not None and now < started + policy.background_veto_cap


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _zone_name(tz: tzinfo) -> str:
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else str(tz)


def _require_aware(value: datetime, what: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, got {value!r}")
