"""Small factories of sessions, entries and jobs for tests, with plain defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sessiongate.models import ChatType, Lineage, NewEntry, NewJob, Role, Session


def new_session(
    session_id: str,
    *,
    at: datetime,
    key: str | None = None,
    platform: str = "telegram",
    chat_id: str = "chat-1",
    chat_type: ChatType = ChatType.DM,
    user_id: str | None = "user-1",
    user_name: str | None = "Ada",
    thread_id: str | None = None,
    title: str | None = None,
    parent_id: str | None = None,
    lineage: Lineage | None = None,
) -> Session:
    """An active session created at `at`; its key defaults to one derived from the id."""
    return Session(
        id=session_id,
        key=key or f"agent:main:{platform}:{chat_type}:{session_id}",
        platform=platform,
        chat_id=chat_id,
        chat_type=chat_type,
        created_at=at,
        last_activity_at=at,
        user_id=user_id,
        user_name=user_name,
        thread_id=thread_id,
        title=title,
        parent_id=parent_id,
        lineage=lineage,
    )


def new_entry(
    text: str,
    *,
    role: Role = Role.USER,
    parts: Sequence[dict[str, Any]] = (),
    platform_message_id: str | None = None,
    token_estimate: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> NewEntry:
    """A ledger entry to append."""
    return NewEntry(
        role=role,
        text=text,
        parts=tuple(parts),
        platform_message_id=platform_message_id,
        token_estimate=token_estimate,
        meta=dict(meta or {}),
    )


def new_job(
    idempotency_key: str,
    *,
    kind: str = "test.job",
    payload: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    ordering_key: str | None = None,
    gates_finalize: bool = False,
    run_after: datetime | None = None,
) -> NewJob:
    """An outbox job to enqueue."""
    return NewJob(
        kind=kind,
        idempotency_key=idempotency_key,
        payload=dict(payload or {}),
        session_id=session_id,
        ordering_key=ordering_key,
        gates_finalize=gates_finalize,
        run_after=run_after,
    )
