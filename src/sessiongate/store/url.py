"""Store URLs: `sqlite:///path/to/file.db`, `postgresql://…`, `memory://`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import platformdirs

from sessiongate.errors import ConfigError

if TYPE_CHECKING:
    from sessiongate.store.base import Store

Dialect = Literal["sqlite", "postgresql", "memory"]

_SCHEMES: dict[str, Dialect] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "memory": "memory",
}


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: the dialect, and either a file path or a libpq DSN."""

    dialect: Dialect
    raw: str
    path: Path | None = None

    def redacted(self) -> str:
        """The URL with any password masked, safe for logs."""
        parts = urlsplit(self.raw)
        if parts.password is None:
            return self.raw
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


def default_store_url() -> str:
    """The embedded default: one SQLite file in the user's data directory."""
    data_dir = Path(platformdirs.user_data_dir("sessiongate", appauthor=False))
    return f"sqlite:///{data_dir / 'sessiongate.db'}"


def parse_store_url(url: str) -> StoreURL:
    """Parse and check a store URL; raises `ConfigError` naming what is wrong."""
    if not url or "\x00" in url:
        raise ConfigError(
            "store URL is empty or contains a NUL byte; expected e.g. "
            "sqlite:///path/to/sessiongate.db or postgresql://user@host/db"
        )
    scheme, sep, rest = url.partition("://")
    dialect = _SCHEMES.get(scheme.lower()) if sep else None
    if dialect is None:
        allowed = ", ".join(f"{s}://" for s in ("sqlite", "postgresql", "memory"))
        raise ConfigError(
            f"store URL {url!r} has an unknown scheme {scheme!r}; use one of {allowed}"
        )
    if dialect == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"SQLite store URL {url!r} needs a file path after 'sqlite://', "
                "e.g. sqlite:///home/me/sessiongate.db (three slashes for an absolute path)"
            )
        return StoreURL("sqlite", url, Path(rest).expanduser())
    return StoreURL(dialect, url)


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store at `url`.

    With `migrate` (the default) pending schema migrations are applied; without
    it, a database that is not at this code's schema version raises `SchemaError`.
    A database newer than this code always raises `SchemaError`.
    """
    parsed = parse_store_url(url)
    store: Store
    if parsed.dialect == "memory":
        from sessiongate.store.memory import MemoryStore

        store = MemoryStore()
    elif parsed.dialect == "sqlite":
        from sessiongate.store.sqlite import SQLiteStore

        assert parsed.path is not None
        store = await SQLiteStore.open(parsed.path)
    else:
        from sessiongate.store.postgres import PostgresStore

        store = await PostgresStore.open(parsed.raw)
    try:
        if migrate:
            await store.migrate()
        else:
            await _check_current(store, parsed.dialect)
    except BaseException:
        await store.close()
        raise
    return store


async def _check_current(store: Store, dialect: Dialect) -> None:
    from sessiongate.errors import SchemaError
    from sessiongate.store.migrations import latest_version

    if dialect == "memory":
        return
    version = await store.schema_version()
    latest = latest_version("sqlite" if dialect == "sqlite" else "postgres")
    if version > latest:
        await store.migrate()  # raises the "newer than this code" SchemaError
    if version != latest:
        raise SchemaError(
            f"the store is at schema version {version} but this code needs {latest}; "
            "run `sessiongate migrate --store URL`"
        )
