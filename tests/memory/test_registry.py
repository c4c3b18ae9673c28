"""Providers configured by name."""

from __future__ import annotations

import pytest

from sessiongate.errors import ConfigError
from sessiongate.memory.openviking import OpenVikingProvider
from sessiongate.memory.registry import build_providers
from sessiongate.store.memory import MemoryStore


async def test_several_providers_of_one_kind_each_keep_their_name() -> None:
    providers = build_providers(
        {
            "openviking": {"endpoint": "http://127.0.0.1:1933", "account": "acme"},
            "archive-2": {"kind": "openviking", "endpoint": "http://127.0.0.1:1934"},
        },
        store=MemoryStore(),
    )
    assert sorted(providers) == ["archive-2", "openviking"]
    assert all(isinstance(p, OpenVikingProvider) for p in providers.values())
    assert providers["archive-2"].name == "archive-2"
    for provider in providers.values():
        assert isinstance(provider, OpenVikingProvider)
        await provider.aclose()


def test_an_unknown_kind_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"memory.providers.mem0: unknown provider kind 'mem0'"):
        build_providers({"mem0": {}}, store=MemoryStore())


def test_an_unknown_setting_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'endpont'; did you mean 'endpoint'"):
        build_providers({"openviking": {"endpont": "http://x"}}, store=MemoryStore())


def test_a_bad_value_names_the_provider() -> None:
    with pytest.raises(ConfigError, match=r"memory.providers.openviking: .*auth"):
        build_providers({"openviking": {"auth": "password"}}, store=MemoryStore())


def test_the_local_provider_lives_in_the_store_and_may_extract_facts() -> None:
    providers = build_providers(
        {
            "local": {},
            "facts": {
                "kind": "local",
                "extract": {"base_url": "http://127.0.0.1:9/v1", "model": "small"},
            },
        },
        store=MemoryStore(),
    )
    assert [p.name for p in providers.values()] == ["local", "facts"]
    with pytest.raises(ConfigError, match=r"memory.providers.local.extract: unknown setting"):
        build_providers({"local": {"extract": {"url": "x"}}}, store=MemoryStore())
