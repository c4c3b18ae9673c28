"""The engine: route a source to its session, record turns, end sessions.

Every boundary goes through `end_session` (or the same `EndRequest` inside a
rotation's single transaction), so every path enqueues the same consumers and
differs only in the reason. Nothing here needs a live agent or provider: the
consumers are jobs in the store, run later by the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sessiongate.clock import Clock
from sessiongate.errors import Conflict, InvalidInput, LeaseLost, NotFound, SessionClosed
from sessiongate.hooks.events import Event
from sessiongate.ids import IdGenerator
from sessiongate.keys import session_key
from sessiongate.lifecycle.checkpoints import checkpoint_timer
from sessiongate.lifecycle.consumers import (
    Rotation,
    checkpoint_jobs,
    end_jobs,
    forget_user_jobs,
    notification_job,
    start_jobs,
)
from sessiongate.lifecycle.settings import LifecycleSettings
from sessiongate.models import (
    EndReason,
    EndRequest,
    Entry,
    Lease,
    Lineage,
    NewEntry,
    Role,
    Session,
    SessionState,
    Source,
    Timer,
)
from sessiongate.policy import Expiry, SessionFacts, evaluate, next_due
from sessiongate.store.base import Store
from sessiongate.validation import check_text

log = logging.getLogger(__name__)

RESET_TIMER = "reset"
_ROUTE_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Routed:
    """The result of `route`: the session to use, and what routing changed."""

    session: Session
    started: bool = False
    ended: Session | None = None
    reason_detail: str | None = None


class Engine:
    """Sessions' lifecycle over a `Store`; safe to run in several replicas at once."""

    def __init__(
        self,
        store: Store,
        settings: LifecycleSettings,
        *,
        clock: Clock,
        ids: IdGenerator,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._ids = ids
        # Wakes in-process workers and the sweeper when jobs or timers were written.
        self._on_change = on_change or (lambda: None)

    @property
    def store(self) -> Store:
        return self._store

    @property
    def settings(self) -> LifecycleSettings:
        return self._settings

    def changed(self) -> None:
        """Tell this process's workers and sweeper that jobs or timers were written."""
        self._on_change()

    def key_of(self, source: Source) -> str:
        """The session key of a source under the configured key policy."""
        return session_key(source, self._settings.keys)

    async def route(self, source: Source, *, fence: Lease | None = None) -> Routed:
        """The current session for `source`, ending an expired one and opening a new one.

        Expiry is the same policy function the timers use, evaluated lazily here; an
        expired session ends with `auto_reset` (the detail names the policy that
        fired) and its successor starts in the same transaction. With `fence` (the
        conversation's lease), every write is refused once another replica holds it.
        """
        key = self.key_of(source)
        for _ in range(_ROUTE_ATTEMPTS):
            now = self._clock.now()
            current = await self._store.routed_session(key)
            if current is None:
                try:
                    return Routed(await self._open(source, key, fence=fence), started=True)
                except LeaseLost:
                    raise
                except Conflict:
                    continue
            expiry = self.expiry(current)
            if expiry is None:
                return Routed(current)
            detail = f"{expiry.reason}: {expiry.detail}"
            end = self._end_request(current, EndReason.AUTO_RESET, detail=detail, at=now)
            try:
                fresh = await self._open(source, key, end=end, rotation_of=current, fence=fence)
            except LeaseLost:
                raise
            except Conflict:
                continue
            return Routed(fresh, started=True, ended=current, reason_detail=detail)
        raise Conflict(f"session key {key!r} kept changing under concurrent writers; retry")

    def expiry(self, session: Session) -> Expiry | None:
        """Which reset policy has expired `session` now, or None (the one policy function)."""
        policy = self._settings.reset.resolve(session.platform, session.chat_type)
        return evaluate(self._facts(session), policy, self._clock.now(), self._settings.tz)

    async def record(
        self,
        session_id: str,
        role: Role,
        text: str,
        *,
        parts: Sequence[dict[str, Any]] = (),
        platform_message_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        fence: Lease | None = None,
        release: bool = False,
    ) -> Entry:
        """Append one ledger entry; the write is durable when this returns.

        Call it with the user's message before the agent sees it, and with the
        reply before it is sent. Raises `SessionClosed` if the session ended
        meanwhile (route again), `InvalidInput` for text that cannot be stored.
        With `fence`, the write is refused (`LeaseLost`) once another replica
        holds the conversation; `release` gives that lease up with the write.
        """
        check_text(text, what=f"{role} message", max_bytes=self._settings.max_message_bytes)
        entry = NewEntry(
            role=role,
            text=text,
            parts=tuple(parts),
            platform_message_id=platform_message_id,
            meta=dict(meta or {}),
        )
        [stored] = await self._store.append_entries(
            session_id, [entry], at=self._clock.now(), fence=fence, release=release
        )
        every = self._settings.checkpoint_every_turns
        if every and self._settings.providers and stored.seq % every == 0:
            # After the write: a crash in between only delays this memory to the
            # next checkpoint or the end, which commit from the cursor onward.
            jobs = checkpoint_jobs(session_id, stored.seq, providers=self._settings.providers)
            await self._store.enqueue(jobs, at=self._clock.now())
            self._on_change()
        return stored

    async def notify(self, session: Session, event: Event) -> None:
        """Deliver a notification event about `session` to the hooks, through the outbox."""
        await self._store.enqueue([notification_job(session, event)], at=self._clock.now())
        self._on_change()

    async def end_session(
        self, session_id: str, reason: EndReason, *, detail: str | None = None
    ) -> bool:
        """The one funnel: end an active session for `reason`; False if it was not active."""
        for _ in range(_ROUTE_ATTEMPTS):
            session = await self._require(session_id)
            if session.state is not SessionState.ACTIVE:
                return False
            request = self._end_request(session, reason, detail=detail, at=self._clock.now())
            if await self._store.end_session(request):
                log.info("session %s ended (%s)", session_id, reason)
                self._on_change()
                return True
            # A turn landed between our read and the end: read again so the
            # end's consumers cover it.
        raise Conflict(f"session {session_id} kept changing while being ended; retry")

    async def new_session(
        self,
        source: Source,
        *,
        reason: EndReason = EndReason.NEW,
        title: str | None = None,
        fence: Lease | None = None,
    ) -> Routed:
        """/new and /reset: end the current session (if any) and start a fresh one."""
        if reason not in (EndReason.NEW, EndReason.RESET, EndReason.ADMIN):
            raise InvalidInput(f"new_session takes reason new, reset or admin, not {reason}")
        key = self.key_of(source)
        for _ in range(_ROUTE_ATTEMPTS):
            current = await self._store.routed_session(key)
            end = None
            if current is not None:
                end = self._end_request(current, reason, at=self._clock.now())
            try:
                fresh = await self._open(
                    source, key, end=end, title=title, rotation_of=current, fence=fence
                )
            except LeaseLost:
                raise
            except Conflict:
                continue
            return Routed(fresh, started=True, ended=current)
        raise Conflict(f"session key {key!r} kept changing under concurrent writers; retry")

    async def branch(
        self, source: Source, *, title: str | None = None, fence: Lease | None = None
    ) -> Routed:
        """/branch: a child with a copy of the current ledger; the parent ends (`branch`)."""
        return await self._rotate_child(
            source, EndReason.BRANCH, Lineage.BRANCH, title=title, fence=fence
        )

    async def compress(
        self,
        source: Source,
        summary: str,
        *,
        title: str | None = None,
        fence: Lease | None = None,
    ) -> Routed:
        """Compression rotation: the parent ends (`compression`); a child continues.

        The child's ledger starts with `summary` as a system entry.
        """
        check_text(summary, what="summary", max_bytes=self._settings.max_message_bytes)
        routed = await self._rotate_child(
            source, EndReason.COMPRESSION, Lineage.COMPRESSION, title=title, fence=fence
        )
        await self.record(
            routed.session.id, Role.SYSTEM, summary, meta={"summary": True}, fence=fence
        )
        return routed

    async def resume(
        self,
        source: Source,
        target_id: str,
        *,
        admin: bool = False,
        fence: Lease | None = None,
    ) -> Routed:
        """/resume: switch the key to an earlier session of the same user and chat.

        The current session ends with `switch`; the target is reopened, and its
        later turns form a new commit epoch.
        """
        key = self.key_of(source)
        for _ in range(_ROUTE_ATTEMPTS):
            target = await self._require(target_id)
            if not admin and not self._same_owner(target, source):
                raise InvalidInput(
                    f"session {target_id} belongs to another user or chat; "
                    "only your own sessions of this chat can be resumed"
                )
            if target.state is SessionState.ACTIVE:
                raise Conflict(f"session {target_id} is already active")
            if target.end_reason is EndReason.FORGET:
                raise Conflict(f"session {target_id} was forgotten; it cannot be resumed")
            current = await self._store.routed_session(key)
            now = self._clock.now()
            end = None
            if current is not None and current.id != target.id:
                end = self._end_request(current, EndReason.SWITCH, at=now, rotation_to=target.id)
            # As the store will reopen it: active again from now, so its reset timer
            # counts from the resume, not from the activity before it ended.
            reopened_epoch = replace(target, epoch=target.epoch + 1, last_activity_at=now)
            try:
                reopened = await self._store.reopen_session(
                    target.id,
                    at=now,
                    end=end,
                    timers=self._timers_for(reopened_epoch),
                    jobs=start_jobs(reopened_epoch, reason="resume"),
                    fence=fence,
                )
            except LeaseLost:
                raise
            except Conflict:
                # A turn or a route changed under us (the end's compare-and-set):
                # read again so the switch's consumers cover what is there now.
                continue
            self._on_change()
            return Routed(reopened, started=True, ended=current)
        raise Conflict(f"session key {key!r} kept changing under concurrent writers; retry")

    async def forget(self, session_id: str) -> bool:
        """Erase a session here and, through jobs, at every provider.

        Through the funnel like every end, from any state: an active session is
        not committed; an ended one is marked forgotten (so it can never be
        resumed) and gets the same erasing jobs. The row stays as a tombstone.
        False if it was already forgotten.
        """
        for _ in range(_ROUTE_ATTEMPTS):
            session = await self._require(session_id)
            if session.end_reason is EndReason.FORGET:
                return False
            request = replace(
                self._end_request(session, EndReason.FORGET, at=self._clock.now()),
                expected=(SessionState.ACTIVE, SessionState.ENDING, SessionState.FINALIZED),
            )
            if await self._store.end_session(request):
                self._on_change()
                return True
        raise Conflict(f"session {session_id} kept changing while being forgotten; retry")

    async def forget_user(self, user_id: str) -> int:
        """Forget every session of a user here and everything of theirs at every provider.

        Returns how many sessions were forgotten.
        """
        sessions = await self._store.list_sessions(user_id=user_id, limit=1_000_000)
        for session in sessions:
            await self.forget(session.id)
        stamp = self._clock.now().isoformat()
        jobs = forget_user_jobs(user_id, providers=self._settings.providers, stamp=stamp)
        await self._store.enqueue(jobs, at=self._clock.now())
        self._on_change()
        return len(sessions)

    async def prune(self, session_id: str) -> bool:
        """End a session for retention (`prune`): committed like any end, routing detached.

        The next message of that conversation starts a new session; the pruned one
        never comes back.
        """
        return await self.end_session(session_id, EndReason.PRUNE)

    async def suspend(self, session_id: str) -> bool:
        """End a session as `suspended` (e.g. an operator pausing a conversation)."""
        return await self.end_session(session_id, EndReason.SUSPENDED)

    async def _rotate_child(
        self,
        source: Source,
        reason: EndReason,
        lineage: Lineage,
        *,
        title: str | None,
        fence: Lease | None,
    ) -> Routed:
        key = self.key_of(source)
        for _ in range(_ROUTE_ATTEMPTS):
            parent = await self._store.routed_session(key)
            if parent is None:
                raise NotFound(f"there is no current session for {key!r} to {reason}")
            end = self._end_request(parent, reason, at=self._clock.now())
            copy = parent.id if lineage is Lineage.BRANCH else None
            try:
                child = await self._open(
                    source,
                    key,
                    end=end,
                    title=title,
                    parent=parent,
                    lineage=lineage,
                    copy_from=copy,
                    rotation_of=parent,
                    fence=fence,
                )
            except LeaseLost:
                raise
            except Conflict:
                continue
            return Routed(child, started=True, ended=parent)
        raise Conflict(f"session key {key!r} kept changing under concurrent writers; retry")

    async def _open(
        self,
        source: Source,
        key: str,
        *,
        end: EndRequest | None = None,
        title: str | None = None,
        parent: Session | None = None,
        lineage: Lineage | None = None,
        copy_from: str | None = None,
        rotation_of: Session | None = None,
        fence: Lease | None = None,
    ) -> Session:
        now = self._clock.now()
        session = Session(
            id=self._ids.new(),
            key=key,
            platform=source.platform,
            chat_id=source.chat_id,
            chat_type=source.chat_type,
            user_id=source.user_id,
            user_name=source.user_name,
            thread_id=source.thread_id,
            title=title,
            parent_id=parent.id if parent else None,
            lineage=lineage,
            created_at=now,
            last_activity_at=now,
        )
        if end is not None and rotation_of is not None:
            end = self._with_rotation(end, rotation_of, session.id)
        stored = await self._store.start_session(
            session,
            end=end,
            copy_entries_from=copy_from,
            timers=self._timers_for(session),
            jobs=start_jobs(session, reason=str(lineage or "new")),
            fence=fence,
        )
        self._on_change()
        return stored

    def _with_rotation(self, end: EndRequest, old: Session, new_id: str) -> EndRequest:
        return self._end_request(old, end.reason, detail=end.detail, at=end.at, rotation_to=new_id)

    def _end_request(
        self,
        session: Session,
        reason: EndReason,
        *,
        at: Any,
        detail: str | None = None,
        rotation_to: str | None = None,
    ) -> EndRequest:
        rotation = None if rotation_to is None else Rotation(session.id, rotation_to)
        jobs = end_jobs(
            session,
            reason,
            providers=self._settings.providers,
            detail=detail,
            rotation=rotation,
        )
        return EndRequest(
            session_id=session.id,
            reason=reason,
            at=at,
            detail=detail,
            jobs=jobs,
            expected_turns=session.turn_count,
        )

    def _timers_for(self, session: Session) -> list[Timer]:
        reset = self.timer_due(session)
        checkpoint = checkpoint_timer(session, self._settings)
        return [timer for timer in (reset, checkpoint) if timer is not None]

    def timer_due(self, session: Session) -> Timer | None:
        """The reset timer `session` should have now (used by the sweeper to reschedule)."""
        policy = self._settings.reset.resolve(session.platform, session.chat_type)
        due = next_due(self._facts(session), policy, self._settings.tz)
        return None if due is None else Timer(session.id, RESET_TIMER, due)

    @staticmethod
    def _facts(session: Session) -> SessionFacts:
        return SessionFacts(
            created_at=session.created_at,
            last_activity_at=session.last_activity_at,
            background_task_started_at=None,
        )

    @staticmethod
    def _same_owner(session: Session, source: Source) -> bool:
        return (
            session.platform == source.platform
            and session.chat_id == source.chat_id
            and session.user_id == source.user_id
        )

    async def _require(self, session_id: str) -> Session:
        session = await self._store.get_session(session_id)
        if session is None:
            raise NotFound(f"no session with id {session_id!r}")
        return session


__all__ = ["RESET_TIMER", "Engine", "Routed", "SessionClosed"]
