"""The configuration file: the documented example, Hermes words, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessiongate.config import (
    BusyPolicy,
    OpenAIAgentSettings,
    load_settings,
    masked,
    parse_settings,
)
from sessiongate.errors import ConfigError
from sessiongate.models import ChatType
from sessiongate.policy import ResetMode

EXAMPLE = """
store: sqlite:///home/me/.local/share/sessiongate/sessiongate.db
server: {host: 127.0.0.1, port: 8420}
hooks_dir: ~/.sessiongate/hooks
agent: {kind: openai, base_url: http://127.0.0.1:8000/v1, model: qwen}
memory:
  providers:
    local: {}
    openviking: {endpoint: http://127.0.0.1:1933, auth: dev, account: acme}
session_reset: {mode: idle, idle_after: 30m}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_documented_example_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EXAMPLE), environ={})
    assert isinstance(settings.agent, OpenAIAgentSettings)
    assert settings.agent.model == "qwen"
    assert list(settings.memory.providers) == ["local", "openviking"]
    assert settings.hooks_dir == Path("~/.sessiongate/hooks").expanduser()
    policy = settings.reset_rules.resolve("web", ChatType.DM)
    assert policy.mode is ResetMode.IDLE
    assert policy.idle is not None
    assert policy.idle.total_seconds() == 1800
    assert settings.lifecycle().providers == ("local", "openviking")


def test_no_file_means_the_embedded_defaults() -> None:
    settings = load_settings(None, environ={})
    assert settings.store is None
    assert settings.agent.kind == "offline"
    assert list(settings.memory.providers) == ["local"]
    assert settings.server.port == 8420
    assert settings.server.loopback
    assert settings.gateway.busy is BusyPolicy.QUEUE


def test_hermes_words_are_accepted() -> None:
    settings = parse_settings(
        {
            "session_reset": {"mode": "both", "at_hour": 3, "idle_minutes": 90, "notify": False},
            "reset_by_platform": {"telegram": {"mode": "daily"}},
            "reset_by_type": {"group": {"idle_minutes": 15}},
            "group_sessions_per_user": False,
            "thread_sessions_per_user": True,
            "session_store_max_age_days": 30,
        }
    )
    rules = settings.reset_rules
    assert rules.resolve("telegram", ChatType.DM).mode is ResetMode.DAILY
    group = rules.resolve("web", ChatType.GROUP)
    assert group.idle is not None
    assert group.idle.total_seconds() == 900
    keys = settings.lifecycle().keys
    assert not keys.group_sessions_per_user
    assert keys.thread_sessions_per_user


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"SESSIONGATE_STORE": "memory://", "SESSIONGATE_PORT": "9001"}
    settings = load_settings(write(tmp_path, EXAMPLE), environ=env)
    assert settings.store == "memory://"
    assert settings.server.port == 9001


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: {prot: 1}", "unknown key 'server.prot'; did you mean 'port'?"),
        ("sesion_reset: {mode: idle}", "did you mean 'session_reset'?"),
        ("agent: {kind: robot}", "agent"),
        ("agent: {kind: openai, model: m}", "agent.openai.base_url"),
        ("agent: {kind: openai, base_url: ftp://x, model: m}", "http:// or https://"),
        ("server: {port: 99999}", "server.port"),
        ("session_reset: {mode: sometimes}", "mode 'sometimes' is not one of"),
        ("timezone: Mars/Olympus", "unknown time zone"),
        ("gateway: {busy: panic}", "gateway.busy"),
        ("- just\n- a list", "mapping of settings at the top level"),
        ("server: {port: [", "not valid YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert message in str(caught.value)
    assert str(tmp_path / "config.yaml") in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_settings_are_frozen() -> None:
    settings = parse_settings({})
    with pytest.raises(ValueError, match="frozen"):
        settings.server.port = 1


def test_show_masks_secrets() -> None:
    settings = parse_settings(
        {
            "store": "postgresql://sg:hunter2@db/sg",
            "server": {"token": "t0ken"},
            "memory": {"providers": {"openviking": {"endpoint": "http://x", "api_key": "k3y"}}},
        }
    )
    shown = str(masked(settings))
    assert "hunter2" not in shown
    assert "t0ken" not in shown
    assert "k3y" not in shown
