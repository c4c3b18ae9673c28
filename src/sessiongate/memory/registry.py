"""Memory providers configured by name, several at once.

The configuration maps a name to its settings:

    memory:
      providers:
        local: {}
        openviking: {endpoint: http://127.0.0.1:1933, auth: dev, account: acme}
        archive-2: {kind: openviking, endpoint: http://10.0.0.7:1933}

The name is the provider's kind unless a `kind` key says otherwise; it is also
the name its cursors are kept under, so renaming a provider starts it afresh.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

from sessiongate.errors import ConfigError
from sessiongate.memory.provider import MemoryProvider
from sessiongate.store.base import Store

Factory = Callable[[str, Mapping[str, Any], Store], MemoryProvider]


def _openviking(name: str, options: Mapping[str, Any], _store: Store) -> MemoryProvider:
    from sessiongate.memory.openviking import OpenVikingProvider, OpenVikingSettings

    settings = _settings(OpenVikingSettings, name, {**options, "name": name})
    return OpenVikingProvider(settings)


def _local(name: str, options: Mapping[str, Any], store: Store) -> MemoryProvider:
    """The built-in provider: archives in the store's own database.

    Options: `max_batch`, and `extract: {base_url, model, key_env, ...}` to have an
    OpenAI-compatible model extract short durable facts at each commit.
    """
    from sessiongate.memory.extractor import ExtractorSettings, OpenAIFactExtractor
    from sessiongate.memory.local import DEFAULT_MAX_BATCH, LocalProvider
    from sessiongate.store.archive import archive_of

    rest = dict(options)
    extract = rest.pop("extract", None)
    for key in rest:
        if key != "max_batch":
            raise ConfigError(
                f"memory.providers.{name}: unknown setting {key!r} (allowed: max_batch, extract)"
            )
    extractor = None
    if extract is not None:
        settings = _settings(ExtractorSettings, f"{name}.extract", dict(extract))
        extractor = OpenAIFactExtractor(settings)
    batch = int(rest.get("max_batch", DEFAULT_MAX_BATCH))
    return LocalProvider(archive_of(store), name=name, max_batch=batch, extractor=extractor)


def _settings(cls: type[Any], name: str, options: Mapping[str, Any]) -> Any:
    """Build a settings dataclass, naming an unknown key and the closest allowed one."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"memory.providers.{name}: unknown setting {key!r}{hint} "
                f"(allowed: {', '.join(sorted(allowed - {'name'}))})"
            )
    try:
        return cls(**options)
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"memory.providers.{name}: {exc}") from None


KINDS: dict[str, Factory] = {"local": _local, "openviking": _openviking}


def register_kind(kind: str, factory: Factory) -> None:
    """Make a provider kind available to the configuration (plugins use this)."""
    KINDS[kind] = factory


def build_providers(
    config: Mapping[str, Mapping[str, Any] | None], *, store: Store
) -> dict[str, MemoryProvider]:
    """Every configured provider by name; raises `ConfigError` naming what is wrong."""
    providers: dict[str, MemoryProvider] = {}
    for name, raw in config.items():
        options = dict(raw or {})
        kind = str(options.pop("kind", name))
        factory = KINDS.get(kind)
        if factory is None:
            known = ", ".join(sorted(KINDS))
            raise ConfigError(
                f"memory.providers.{name}: unknown provider kind {kind!r}; known kinds: {known} "
                "(set `kind:` when the name is not the kind)"
            )
        providers[name] = factory(name, options, store)
    return providers
