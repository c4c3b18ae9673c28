"""Durable storage: the `Store` protocol and its SQLite, PostgreSQL and memory implementations."""

from __future__ import annotations

from sessiongate.store.base import CursorStore, Outbox, SessionStore, Store, TimerStore
from sessiongate.store.url import StoreURL, default_store_url, open_store, parse_store_url

__all__ = [
    "CursorStore",
    "Outbox",
    "SessionStore",
    "Store",
    "StoreURL",
    "TimerStore",
    "default_store_url",
    "open_store",
    "parse_store_url",
]
