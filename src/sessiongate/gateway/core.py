"""The gateway: one inbound message in, one reply out, every step written ahead.

A message is routed to its session, written to the ledger before the agent sees
it, answered with the user's recalled memory, and the reply is written to the
ledger before it goes back to the platform. Slash commands are offered to the
decision hooks and then run. Platforms call `handle`; nothing here knows which
platform it is talking to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from sessiongate.agent.base import Agent, AgentTurn
from sessiongate.clock import Clock
from sessiongate.config import BusyPolicy, GatewaySettings
from sessiongate.errors import Conflict, InvalidInput, LeaseLost, NotFound, SessionClosed
from sessiongate.gateway.commands import (
    CommandContext,
    Commands,
    Parsed,
    help_text,
    parse_command,
    visible,
)
from sessiongate.gateway.lanes import Busy, Lanes
from sessiongate.gateway.leases import ConversationLeases, LeaseSettings
from sessiongate.gateway.message import Inbound, Outbound
from sessiongate.hooks import events
from sessiongate.hooks.decision import DecisionKind
from sessiongate.hooks.dispatcher import HookDispatcher
from sessiongate.ids import IdGenerator
from sessiongate.lifecycle.engine import Engine, Routed
from sessiongate.logs import about_session
from sessiongate.memory.provider import RecallHit, RecallScope
from sessiongate.memory.recall import Recaller
from sessiongate.models import Entry, Lease, Role, Session, Source
from sessiongate.validation import check_text

log = logging.getLogger(__name__)

#: How many ledger entries before a message the agent is given (it trims to its budget).
HISTORY_WINDOW = 200
INTERRUPTED = "(interrupted: this answer was stopped before it was finished)"
_RECORD_ATTEMPTS = 4


class Gateway:
    """Handles inbound messages for every platform; safe for many sessions at once."""

    def __init__(
        self,
        engine: Engine,
        agent: Agent,
        recaller: Recaller,
        hooks: HookDispatcher,
        *,
        settings: GatewaySettings,
        clock: Clock,
        ids: IdGenerator,
        owner: str = "gateway",
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.agent = agent
        self._recaller = recaller
        self._hooks = hooks
        self._settings = settings
        self._clock = clock
        self._ids = ids
        self._lanes = Lanes(settings.busy)
        self._leases = ConversationLeases(
            self.store,
            owner=owner,
            clock=clock,
            settings=LeaseSettings(settings.lease_seconds, settings.lease_wait_seconds),
        )
        self._commands = Commands(engine, agent, clock)

    async def handle(self, inbound: Inbound) -> Outbound:
        """Answer one message or command. Bad input gets a notice; nothing is half-stored."""
        text = inbound.text
        try:
            check_text(text, max_bytes=self._settings.max_message_bytes)
            if not text.strip():
                raise InvalidInput("the message is empty; type something to say")
            source = self._identified(inbound.source)
            key = self.engine.key_of(source)
        except InvalidInput as exc:
            return Outbound(None, f"Not accepted: {exc}.", notice=True)
        parsed = parse_command(text)
        if parsed is not None and parsed.name == "stop":
            stopped = self._lanes.interrupt(key)
            return Outbound(
                await self.store.routed_session(key),
                "Stopped the answer." if stopped else "Nothing is being answered right now.",
                command="stop",
            )
        wait = self._settings.busy is not BusyPolicy.REJECT
        try:
            async with self._lanes.turn(key), self._leases.hold(key, wait=wait) as fence:
                if parsed is not None:
                    return await self._command(source, parsed, fence)
                return await self._message(key, source, inbound, fence)
        except Busy as exc:
            return Outbound(None, f"Busy: {exc}.", notice=True)
        except LeaseLost:
            log.warning("lost the conversation %s to another replica mid-message", key)
            return Outbound(
                await self.store.routed_session(key),
                "This conversation was taken over by another gateway replica before the "
                "answer was stored; send your message again.",
                notice=True,
            )
        except (InvalidInput, NotFound, Conflict) as exc:
            return Outbound(await self.store.routed_session(key), f"{exc}.", notice=True)

    async def conversation(self, source: Source) -> tuple[Session | None, list[Entry]]:
        """The session `source` routes to now and its visible ledger (for a page reload)."""
        key = self.engine.key_of(self._identified(source))
        session = await self.store.routed_session(key)
        if session is None:
            return None, []
        return session, visible(await self.store.entries(session.id))

    async def drain(self, seconds: float) -> None:
        """Let running agent turns finish for up to `seconds`, then interrupt them."""
        running = self._lanes.running()
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    def _identified(self, source: Source) -> Source:
        # Memory is kept per user: a source without a user id is its chat's only user.
        return source if source.user_id else replace(source, user_id=source.chat_id)

    async def _command(self, source: Source, parsed: Parsed, fence: Lease) -> Outbound:
        current = await self.store.routed_session(self.engine.key_of(source))
        event = events.command(
            parsed.name,
            event_id=f"command.{self._ids.new()}",
            source=source,
            raw_command=parsed.raw_command,
            raw_args=parsed.raw_args,
            session=current,
        )
        decision = await self._hooks.decide(event)
        if decision.kind is DecisionKind.DENY:
            return Outbound(
                current,
                decision.message or f"{parsed.raw_command} is not allowed here.",
                notice=True,
            )
        if decision.kind is DecisionKind.HANDLED:
            return Outbound(current, decision.message or "Done.", command=parsed.name)
        if decision.kind is DecisionKind.REWRITE and decision.command_name:
            parsed = Parsed(decision.command_name, parsed.raw_command, decision.raw_args or "")
        handler = self._commands.handlers.get(parsed.name)
        if handler is None:
            return Outbound(current, f"Unknown command /{parsed.name}.\n{help_text()}", notice=True)
        admin = source.user_id in self._settings.admins
        return await handler(CommandContext(source, current, parsed.args, admin, fence))

    async def _message(self, key: str, source: Source, inbound: Inbound, fence: Lease) -> Outbound:
        routed, entry = await self._write_ahead(source, inbound, fence)
        with about_session(routed.session.id):
            return await self._respond(key, source, inbound, routed, entry, fence)

    async def _respond(
        self,
        key: str,
        source: Source,
        inbound: Inbound,
        routed: Routed,
        entry: Entry,
        fence: Lease,
    ) -> Outbound:
        """Everything after the write-ahead: events, recall, the agent, the reply."""
        session = routed.session
        preamble = None
        if routed.ended is not None and self._announces_reset(routed.ended):
            preamble = f"(Your previous session was automatically reset: {routed.reason_detail}.)"
        await self.engine.notify(
            session,
            events.agent_start(
                session, event_id=f"{session.id}.{entry.seq}.agent-start", message=inbound.text
            ),
        )
        history = visible(
            await self.store.entries(
                session.id, after_seq=max(0, entry.seq - 1 - HISTORY_WINDOW), upto_seq=entry.seq - 1
            )
        )
        scope = RecallScope(
            user_id=source.user_id or source.chat_id,
            platform=source.platform,
            exclude_session_id=session.id,
        )
        recalled = await self._recaller.recall(scope, inbound.text)

        async def search(query: str) -> Sequence[RecallHit]:
            return (await self._recaller.recall(scope, query)).hits

        turn = AgentTurn(session, history, inbound.text, recalled, search)
        reply, interrupted = await self._answer(key, turn, fence)
        # The reply is the message's last ledger write: it gives the lease back too.
        stored = await self._record_reply(
            session, reply, interrupted=interrupted, fence=fence, release=True
        )
        interrupted = bool(stored.meta.get("interrupted"))
        await self.engine.notify(
            session,
            events.agent_end(
                session,
                event_id=f"{session.id}.{entry.seq}.agent-end",
                message=inbound.text,
                response=None if interrupted else stored.text,
            ),
        )
        # The reply was appended to an active session, so its counters are derived
        # here rather than read back: one store read less on every turn.
        latest = replace(
            session,
            turn_count=stored.seq,
            token_estimate=session.token_estimate + entry.token_estimate + stored.token_estimate,
            last_activity_at=stored.created_at,
        )
        return Outbound(
            latest,
            stored.text,
            recalled=recalled.hits,
            interrupted=interrupted,
            preamble=preamble,
        )

    async def _write_ahead(
        self, source: Source, inbound: Inbound, fence: Lease
    ) -> tuple[Routed, Entry]:
        """Route and record the user's message; durable before anything else happens."""
        for _ in range(_RECORD_ATTEMPTS):
            routed = await self.engine.route(source, fence=fence)
            try:
                entry = await self.engine.record(
                    routed.session.id,
                    Role.USER,
                    inbound.text,
                    platform_message_id=inbound.platform_message_id,
                    fence=fence,
                )
            except SessionClosed:
                continue  # ended between route and record (a timer, another replica)
            return routed, entry
        raise Conflict("the session kept ending while the message was being stored; send it again")

    async def _answer(self, key: str, turn: AgentTurn, fence: Lease) -> tuple[str, bool]:
        """The agent's reply, or (notice, True) when the turn was interrupted."""
        work = asyncio.create_task(self.agent.reply(turn), name=f"agent:{turn.session.id}")
        try:
            return await self._lanes.run_agent(key, work), False
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # This handler itself is being cancelled (shutdown, client gone): record
                # the turn as interrupted, then let the cancellation through.
                work.cancel()
                await self._record_reply(turn.session, INTERRUPTED, interrupted=True, fence=fence)
                raise
            return INTERRUPTED, True
        except Exception as exc:  # isolation point: a failing agent never loses the message
            log.exception("agent %s failed on session %s", self.agent.name, turn.session.id)
            return (
                f"The agent could not answer ({type(exc).__name__}: {exc}). "
                "Your message is saved; try again.",
                True,
            )

    async def _record_reply(
        self,
        session: Session,
        text: str,
        *,
        interrupted: bool,
        fence: Lease,
        release: bool = False,
    ) -> Entry:
        meta = {"interrupted": True} if interrupted else None
        try:
            stored = await self.engine.record(
                session.id, Role.ASSISTANT, text, meta=meta, fence=fence, release=release
            )
            if release:
                self._leases.given_back(fence)
            return stored
        except InvalidInput as exc:
            # A reply that cannot be stored is not sent either (write-ahead): say why.
            log.error("the reply for session %s cannot be stored: %s", session.id, exc)
            notice = f"(the agent's reply could not be stored: {exc})"
            return await self.engine.record(
                session.id, Role.ASSISTANT, notice, meta={"interrupted": True}, fence=fence
            )
        except SessionClosed:
            # The session ended while the agent was answering (a /new from another
            # device, a timer): the reply still belongs to it, for the record.
            log.warning("session %s ended before its reply was recorded", session.id)
            raise

    def _announces_reset(self, ended: Session) -> bool:
        policy = self.engine.settings.reset.resolve(ended.platform, ended.chat_type)
        return policy.notifies(ended.platform)
