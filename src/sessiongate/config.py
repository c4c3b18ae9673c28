"""The configuration: one YAML file plus environment variables, read once into frozen settings.

Every section is a pydantic model that forbids unknown keys, so a typo is an error
that names its path (`server.prot`) and, where a known key is close, the one that
was meant. Hermes users' words (`session_reset`, `reset_by_platform`,
`reset_by_type`, `group_sessions_per_user`, `thread_sessions_per_user`,
`session_store_max_age_days`) are accepted as they are. Secrets are never written
in the file itself: keys ending in `_env` name the environment variable that holds
them.

Environment variables override the file: `SESSIONGATE_STORE`, `SESSIONGATE_HOST`,
`SESSIONGATE_PORT` and `SESSIONGATE_TOKEN`.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sessiongate.errors import ConfigError
from sessiongate.keys import DEFAULT_PROFILE, KeyPolicy
from sessiongate.lifecycle.settings import LifecycleSettings, RetentionPolicy
from sessiongate.policy import ResetRules, parse_duration
from sessiongate.validation import DEFAULT_MAX_MESSAGE_BYTES

DEFAULT_PORT = 8420
CONFIG_ENV = "SESSIONGATE_CONFIG"


class Section(BaseModel):
    """A configuration section: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    """The one HTTP server: web chat page, HTTP APIs, webhooks."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    # Required by the web page, the HTTP APIs and the terminal when the server is
    # bound to anything but loopback. Prefer `token_env`.
    token: str | None = None
    token_env: str | None = None

    @property
    def loopback(self) -> bool:
        """Whether the server is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def access_token(self) -> str | None:
        """The token clients must present, if one is configured."""
        if self.token_env:
            return os.environ.get(self.token_env) or self.token
        return self.token


class BusyPolicy(StrEnum):
    """What a message does when the agent is still answering the same session."""

    QUEUE = "queue"
    INTERRUPT = "interrupt"
    REJECT = "reject"


class GatewaySettings(Section):
    """How inbound messages are handled."""

    busy: BusyPolicy = BusyPolicy.QUEUE
    max_message_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_MESSAGE_BYTES
    # How long a stop waits for running turns before it interrupts them.
    drain_seconds: Annotated[float, Field(ge=0)] = 10.0
    # User ids that may /resume other users' sessions and end any session.
    admins: tuple[str, ...] = ()
    # A replica holds a conversation's lease while it handles a message of it,
    # renewing it every third of this; a replica that stalls longer loses it.
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    # How long a message waits while another replica handles its conversation
    # (under the reject policy it does not wait).
    lease_wait_seconds: Annotated[float, Field(ge=0)] = 60.0


class OfflineAgentSettings(Section):
    """The default agent: deterministic replies, no model needed."""

    kind: Literal["offline"] = "offline"


class OpenAIAgentSettings(Section):
    """Any OpenAI-compatible chat completions endpoint."""

    kind: Literal["openai"]
    base_url: str
    model: str
    # The environment variable holding the API key (unset is fine for local servers).
    api_key_env: str = "OPENAI_API_KEY"
    system_prompt: str = (
        "You are a helpful assistant. Use the memory-context block, when present, as "
        "background about this user; search memory when earlier conversations matter."
    )
    # Ledger history sent with each turn, newest first, within this many tokens.
    history_tokens: Annotated[int, Field(gt=0)] = 6000
    timeout: Annotated[float, Field(gt=0)] = 60.0
    temperature: float | None = None
    max_tool_rounds: Annotated[int, Field(ge=0, le=8)] = 3

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
        return value


AgentSettings = Annotated[OfflineAgentSettings | OpenAIAgentSettings, Field(discriminator="kind")]


def _local_only() -> dict[str, dict[str, Any] | None]:
    return {"local": {}}


class MemorySettings(Section):
    """Long-term memory providers (by name) and recall."""

    # Name → settings; see `sessiongate.memory.registry` for each kind's keys.
    providers: dict[str, dict[str, Any] | None] = Field(default_factory=_local_only)
    recall_deadline_ms: Annotated[int, Field(gt=0, le=60_000)] = 300
    recall_limit: Annotated[int, Field(ge=1, le=100)] = 8
    # Rolling commit checkpoints of live sessions (0 turns: only at the end).
    checkpoint_every_turns: Annotated[int, Field(ge=0)] = 40
    checkpoint_quiet: str | None = "10m"


class TelegramSettings(Section):
    """A Telegram bot (python-telegram-bot)."""

    enabled: bool = True
    token_env: str = "TELEGRAM_BOT_TOKEN"
    mode: Literal["polling", "webhook"] = "polling"
    # The public URL Telegram posts updates to, in webhook mode; the gateway serves
    # it at `webhook_path` on its own HTTP server.
    webhook_url: str | None = None
    webhook_path: str = "/telegram/webhook"
    webhook_secret_env: str | None = None
    # Telegram user ids allowed to talk to the bot; empty refuses everyone.
    allowed_users: tuple[str, ...] = ()
    allow_all_users: bool = False
    # The Bot API server (tests and self-hosted Bot API servers change it).
    base_url: str = "https://api.telegram.org/bot"
    poll_timeout: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("allowed_users", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # YAML reads `allowed_users: [12345]` as numbers; Telegram ids are kept as text.
        if isinstance(value, list | tuple):
            return tuple(
                str(item) if isinstance(item, int) and not isinstance(item, bool) else item
                for item in value
            )
        return value

    @field_validator("webhook_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/', e.g. /telegram/webhook")
        return value

    @field_validator("webhook_url", "base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// URL (http:// only for local test servers)")
        return value


class WebSettings(Section):
    """The web chat page at `/`."""

    enabled: bool = True


class ApiSettings(Section):
    """`/api/v1/messages` and the OpenAI-compatible `/v1/chat/completions`."""

    enabled: bool = True
    # The header naming the conversation on /v1/chat/completions (else the `user` field).
    conversation_header: str = "X-Session-Key"


class AdminSettings(Section):
    """The operator page at `/admin`: off until its own token is configured."""

    # The environment variable holding the admin token; unset or empty: the page is off.
    # Its own token, not `server.token`: chat users must never be operators by default.
    token_env: str | None = None

    def access_token(self) -> str | None:
        """The admin token, or None when the page is off."""
        return (os.environ.get(self.token_env) or None) if self.token_env else None


class MetricsSettings(Section):
    """Prometheus metrics at `/metrics`, read from the store at each scrape."""

    enabled: bool = True
    # The environment variable of a bearer token scrapers must present; unset: the
    # server's rule (open on loopback, `server.token` otherwise).
    token_env: str | None = None
    # Sessions ended at most this long ago make up the end-to-commit histogram.
    commit_window: str = "1h"

    @field_validator("commit_window")
    @classmethod
    def _window(cls, value: str) -> str:
        try:
            parse_duration(value, what="platforms.metrics.commit_window")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    def access_token(self) -> str | None:
        """The scrapers' own token, if one is configured."""
        return (os.environ.get(self.token_env) or None) if self.token_env else None


class PlatformSettings(Section):
    """The chat platforms; the web page and the HTTP APIs are on by default."""

    web: WebSettings = Field(default_factory=WebSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    telegram: TelegramSettings | None = None


class WorkerSettings(Section):
    """The outbox workers and the timers sweeper of this replica."""

    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    # A lane (one memory provider, the hooks) holding this many of those is passed over
    # while another lane has a job due; unset: half.
    lane_slots: Annotated[int, Field(ge=1, le=256)] | None = None
    # A replica that dies holds its jobs and timers this long before another takes them.
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    # Work written by other replicas is seen at least this often.
    poll_seconds: Annotated[float, Field(gt=0)] = 1.0
    # Missed timers are caught up at most this many sessions per second after downtime.
    catch_up_rate: Annotated[float, Field(gt=0)] = 200.0


class RetentionSettings(Section):
    """How long each artefact is kept; 0 keeps it forever."""

    # Finalized sessions with their ledgers, once every provider has received them.
    ended_sessions_days: Annotated[float, Field(ge=0)] = 90
    done_jobs_days: Annotated[float, Field(ge=0)] = 7
    # Dead letters of finished sessions (a live session's stay until redriven or dropped).
    dead_letters_days: Annotated[float, Field(ge=0)] = 30
    # The gateway prunes this often on its own; 0: only `sessiongate prune` does.
    every_minutes: Annotated[float, Field(ge=0)] = 60
    batch: Annotated[int, Field(ge=1, le=100_000)] = 500


class LogSettings(Section):
    """Where log lines go is standard error; this says how they look."""

    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(Section):
    """Everything sessiongate reads from its configuration, validated and frozen."""

    store: str | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    hooks_dir: Path | None = None
    agent: AgentSettings = Field(default_factory=OfflineAgentSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    platforms: PlatformSettings = Field(default_factory=PlatformSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    timezone: str = "UTC"
    profile: str = DEFAULT_PROFILE
    # Hermes words.
    session_reset: dict[str, Any] | None = None
    reset_by_platform: dict[str, dict[str, Any]] | None = None
    reset_by_type: dict[str, dict[str, Any]] | None = None
    group_sessions_per_user: bool = True
    thread_sessions_per_user: bool = False
    # Conversations idle this long end (reason `prune`) and start afresh; 0 disables.
    session_store_max_age_days: Annotated[float, Field(ge=0)] = 90

    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Europe/Berlin"
            ) from None
        return value

    @field_validator("hooks_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @cached_property
    def reset_rules(self) -> ResetRules:
        """The reset rules the Hermes words describe."""
        return ResetRules.from_config(
            self.session_reset, self.reset_by_platform, self.reset_by_type
        )

    def lifecycle(self) -> LifecycleSettings:
        """The engine's part of the settings."""
        quiet = self.memory.checkpoint_quiet
        return LifecycleSettings(
            keys=KeyPolicy(
                profile=self.profile,
                group_sessions_per_user=self.group_sessions_per_user,
                thread_sessions_per_user=self.thread_sessions_per_user,
            ),
            reset=self.reset_rules,
            tz=ZoneInfo(self.timezone),
            providers=tuple(self.memory.providers),
            max_message_bytes=self.gateway.max_message_bytes,
            checkpoint_every_turns=self.memory.checkpoint_every_turns or None,
            checkpoint_quiet=None
            if quiet is None
            else parse_duration(quiet, what="memory.checkpoint_quiet"),
        )

    def retention_policy(self) -> RetentionPolicy:
        """The retention rules the `retention` section and Hermes' max age describe."""

        def days(value: float) -> timedelta | None:
            return timedelta(days=value) if value > 0 else None

        kept = self.retention
        every = kept.every_minutes
        return RetentionPolicy(
            idle=days(self.session_store_max_age_days),
            ended_sessions=days(kept.ended_sessions_days),
            done_jobs=days(kept.done_jobs_days),
            dead_letters=days(kept.dead_letters_days),
            batch=kept.batch,
            every=timedelta(minutes=every) if every > 0 else None,
        )

    def hooks_directory(self) -> Path | None:
        """The directory hooks load from: the configured one, else the default if it exists."""
        if self.hooks_dir is not None:
            return self.hooks_dir
        default = Path("~/.sessiongate/hooks").expanduser()
        return default if default.is_dir() else None


def default_config_path() -> Path:
    """Where `sessiongate run` looks for a config file when none is given."""
    return Path(platformdirs.user_config_dir("sessiongate", appauthor=False)) / "config.yaml"


def load_settings(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the configuration once: `path` (else `$SESSIONGATE_CONFIG`, else the default file
    if it exists, else the embedded defaults), then the environment overrides."""
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    if path is None and default_config_path().is_file():
        path = default_config_path()
    data = {} if path is None else _read_yaml(path)
    overrides = {
        "SESSIONGATE_STORE": ("store",),
        "SESSIONGATE_HOST": ("server", "host"),
        "SESSIONGATE_PORT": ("server", "port"),
        "SESSIONGATE_TOKEN": ("server", "token"),
    }
    for var, where in overrides.items():
        if env.get(var):
            target = data
            for part in where[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"{'.'.join(where[:-1])} must be a mapping")
            target[where[-1]] = env[var]
    return parse_settings(data, origin=str(path) if path else "the embedded defaults")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings at the top level")
    return data


def parse_settings(data: Mapping[str, Any], *, origin: str = "the configuration") -> Settings:
    """Validate `data` into `Settings`; a `ConfigError` names every bad key by its path."""
    try:
        settings = Settings.model_validate(dict(data))
        settings.reset_rules  # noqa: B018 - validates the Hermes reset words now
        settings.lifecycle()
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise ConfigError(f"{origin}: " + "; ".join(problems)) from None
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    return settings


def _describe(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    path = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {path!r}{hint} (allowed here: {', '.join(allowed)})"
    return f"{path}: {error['msg']}"


def _allowed_keys(loc: list[str]) -> list[str]:
    """The keys a section at `loc` takes (best effort, for hints)."""
    model: Any = Settings
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            # A discriminated union member (agent.openai): the tag names the model.
            candidates = {"offline": OfflineAgentSettings, "openai": OpenAIAgentSettings}
            model = candidates.get(part, model)
            continue
        annotation = field.annotation
        model = _section_of(annotation) or model
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def _section_of(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with secrets masked (for `config show`)."""
    data = settings.model_dump(mode="json")
    if data["server"].get("token"):
        data["server"]["token"] = "***"
    for options in (data["memory"].get("providers") or {}).values():
        for key in list(options or {}):
            if any(word in key.lower() for word in ("key", "token", "secret", "password")) and (
                not key.endswith("_env")
            ):
                options[key] = "***"
    if data.get("store"):
        from sessiongate.store.url import parse_store_url

        data["store"] = parse_store_url(data["store"]).redacted()
    return data
