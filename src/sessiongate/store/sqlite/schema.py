"""Schema migrations of the SQLite store, applied through the writer.

Each migration runs in the writer's transaction together with the row recording
its version, so a database is always exactly at one version.
"""

from __future__ import annotations

import sqlite3

from sessiongate.errors import SchemaError
from sessiongate.store.migrations import Migration
from sessiongate.store.sqlite import queries
from sessiongate.store.sqlite.connection import one


def version(conn: sqlite3.Connection) -> int:
    """The schema version of the database; 0 when it holds no schema yet."""
    if one(conn, queries.SCHEMA_MIGRATIONS_EXISTS, {}) is None:
        return 0
    row = one(conn, queries.SCHEMA_VERSION, {})
    return 0 if row is None else int(row["version"])


def prepare(conn: sqlite3.Connection) -> int:
    """Create the `schema_migrations` table if missing; the current version."""
    conn.execute(queries.CREATE_SCHEMA_MIGRATIONS)
    return version(conn)


def apply(conn: sqlite3.Connection, migration: Migration, *, at: int) -> int:
    """Apply `migration` unless the database already has it; the version reached."""
    current = prepare(conn)
    if current >= migration.version:
        return current  # applied meanwhile by another process
    if current != migration.version - 1:
        raise SchemaError(
            f"cannot apply migration {migration.version} ({migration.name}) to a database "
            f"at version {current}"
        )
    for statement in statements(migration.sql):
        conn.execute(statement)
    conn.execute(
        queries.RECORD_MIGRATION,
        {"version": migration.version, "name": migration.name, "at": at},
    )
    return migration.version


def statements(script: str) -> list[str]:
    """Split a migration script into single statements (triggers and strings kept whole)."""
    found: list[str] = []
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            found.append(script[start : index + 1])
            start = index + 1
    rest = "\n".join(
        line for line in script[start:].splitlines() if not line.strip().startswith("--")
    )
    if rest.strip():
        raise SchemaError(f"migration text ends with an unfinished statement: {rest.strip()!r}")
    return found
