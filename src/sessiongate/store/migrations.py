"""Numbered schema migrations, one folder of `NNNN_name.sql` files per dialect.

A migration file is applied whole, in one transaction, together with the row
that records its version in `schema_migrations`. Applying is idempotent: a
database already at a version skips it. A database whose version is newer than
the newest file here was written by newer code and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from sessiongate.errors import SchemaError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    sql: str


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The migrations of `dialect` ("sqlite" or "postgres"), in version order."""
    folder = resources.files(f"sessiongate.store.{dialect}").joinpath("migrations")
    found: list[Migration] = []
    for item in folder.iterdir():
        match = _NAME.match(item.name)
        if match:
            found.append(Migration(int(match[1]), match[2], item.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise SchemaError(f"{dialect} migrations are not numbered 1..n: {migration.name}")
    return tuple(found)


def latest_version(dialect: str) -> int:
    """The newest schema version this code knows for `dialect`."""
    migrations = load_migrations(dialect)
    return migrations[-1].version if migrations else 0


def pending(dialect: str, current: int) -> tuple[Migration, ...]:
    """The migrations to apply to a database at `current`; refuses a newer database."""
    latest = latest_version(dialect)
    if current > latest:
        raise SchemaError(
            f"the {dialect} database is at schema version {current}, newer than this "
            f"sessiongate knows ({latest}); upgrade sessiongate instead of downgrading the data"
        )
    return tuple(m for m in load_migrations(dialect) if m.version > current)
