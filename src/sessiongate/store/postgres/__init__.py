"""The PostgreSQL store, for one or several replicas sharing one database."""

from __future__ import annotations

from sessiongate.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
