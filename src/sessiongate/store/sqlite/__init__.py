"""The SQLite store: the embedded default, one file in WAL mode, with group commit."""

from __future__ import annotations

from sessiongate.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
