"""The in-chat slash commands.

Each command is first offered to the `command:<name>` decision hooks (allow,
deny, handled, rewrite), then run. Commands change sessions only through the
engine, so every end they cause goes through the one funnel.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sessiongate.agent.base import Agent
from sessiongate.clock import Clock
from sessiongate.errors import InvalidInput, NotFound
from sessiongate.gateway.message import Outbound
from sessiongate.lifecycle.engine import Engine
from sessiongate.models import EndReason, Entry, Lease, Role, Session, Source

_COMMAND = re.compile(r"^/([A-Za-z][\w.-]*)(?:@[\w]+)?(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A slash command as typed: `/New@bot  my title` → name `new`, args `my title`."""

    name: str
    raw_command: str
    raw_args: str

    @property
    def args(self) -> str:
        return self.raw_args.strip()


def parse_command(text: str) -> Parsed | None:
    """The command in `text`, or None when it is an ordinary message."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    raw_command = text.strip().split(maxsplit=1)[0]
    return Parsed(match.group(1).lower(), raw_command, match.group(2) or "")


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command handler works with."""

    source: Source
    session: Session | None
    args: str
    admin: bool
    # The conversation's lease: every write of the command is fenced by it.
    fence: Lease | None = None


Handler = Callable[[CommandContext], Awaitable[Outbound]]

HELP = {
    "new": "/new [title] — end this session and start a fresh one",
    "reset": "/reset — the same as /new, without a title",
    "resume": "/resume [title or id] — continue one of your earlier sessions of this chat",
    "branch": "/branch [title] — continue in a child session with a copy of this one",
    "sessions": "/sessions — your sessions of this chat",
    "title": "/title <text> — name this session",
    "status": "/status — this session's id, age, turns and memory sync",
    "undo": "/undo [n] — take back your last n messages and their replies",
    "compress": "/compress — summarize this session and continue in a child",
    "stop": "/stop — stop the answer being written",
    "help": "/help — this list",
}


def help_text() -> str:
    """Every command with a line of help."""
    return "Commands:\n" + "\n".join(HELP.values())


def age(since: datetime, now: datetime) -> str:
    """A short human age: `42s`, `5m`, `3h 2m`, `2d 4h`."""
    seconds = max(0, int((now - since).total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def describe(session: Session) -> str:
    """One line naming a session for listings."""
    title = f" “{session.title}”" if session.title else ""
    ended = f", ended ({session.end_reason})" if session.end_reason else ""
    return (
        f"{session.id}{title}: {session.turn_count} turns, "
        f"started {session.created_at:%Y-%m-%d %H:%M} UTC{ended}"
    )


def pick_session(candidates: list[Session], wanted: str, current: Session | None) -> Session:
    """The session `/resume` means: by id, else by title, else the latest other one."""
    others = [s for s in candidates if current is None or s.id != current.id]
    if not wanted:
        if not others:
            raise NotFound("there is no earlier session of yours in this chat to resume")
        return others[0]
    for session in others:
        if session.id == wanted:
            return session
    lowered = wanted.casefold()
    for session in others:
        if session.title and session.title.casefold() == lowered:
            return session
    for session in others:
        if session.title and lowered in session.title.casefold():
            return session
    raise NotFound(
        f"no session of yours in this chat has the id or title {wanted!r}; see /sessions"
    )


def undo_seqs(entries: list[tuple[int, Role, bool]], count: int) -> list[int]:
    """The seqs `/undo count` takes back: the last `count` user messages and what followed.

    `entries` are (seq, role, already undone) in ledger order.
    """
    if count < 1:
        raise InvalidInput("/undo takes a positive number of messages, e.g. /undo 2")
    live = [(seq, role) for seq, role, undone in entries if not undone and role is not Role.SYSTEM]
    taken: list[int] = []
    users = 0
    for seq, role in reversed(live):
        taken.append(seq)
        if role is Role.USER:
            users += 1
            if users == count:
                break
    if users == 0:
        raise InvalidInput("there is nothing to undo in this session")
    return sorted(taken)


def visible(entries: list[Entry]) -> list[Entry]:
    """The ledger as the agent and the user see it: without undone or bookkeeping entries."""
    undone: set[int] = set()
    for entry in entries:
        undone.update(int(seq) for seq in entry.meta.get("undo", ()))
    return [
        entry
        for entry in entries
        if entry.seq not in undone
        and "undo" not in entry.meta
        and not entry.meta.get("interrupted")
    ]


class Commands:
    """The handlers of the slash commands (all but /stop, which the gateway runs itself)."""

    def __init__(self, engine: Engine, agent: Agent, clock: Clock) -> None:
        self._engine = engine
        self._store = engine.store
        self._agent = agent
        self._clock = clock
        self.handlers: dict[str, Handler] = {
            "new": self.new,
            "reset": self.reset,
            "resume": self.resume,
            "branch": self.branch,
            "sessions": self.sessions,
            "title": self.title,
            "status": self.status,
            "undo": self.undo,
            "compress": self.compress,
            "help": self.help,
        }

    async def new(self, ctx: CommandContext) -> Outbound:
        return await self._fresh(ctx, EndReason.NEW, ctx.args or None)

    async def reset(self, ctx: CommandContext) -> Outbound:
        return await self._fresh(ctx, EndReason.RESET, None)

    async def _fresh(self, ctx: CommandContext, reason: EndReason, title: str | None) -> Outbound:
        routed = await self._engine.new_session(
            ctx.source, reason=reason, title=title, fence=ctx.fence
        )
        text = f"Started a new session {routed.session.id}."
        if routed.ended is not None:
            text += f" The previous one ({routed.ended.id}) is being saved to memory."
        return Outbound(routed.session, text, command=str(reason))

    async def resume(self, ctx: CommandContext) -> Outbound:
        source = ctx.source
        target: Session | None = None
        if ctx.admin and ctx.args:
            target = await self._store.get_session(ctx.args)
        if target is None:
            mine = await self._store.list_sessions(
                user_id=source.user_id, chat_id=source.chat_id, platform=source.platform, limit=50
            )
            target = pick_session(mine, ctx.args, ctx.session)
        routed = await self._engine.resume(source, target.id, admin=ctx.admin, fence=ctx.fence)
        return Outbound(
            routed.session,
            f"Resumed {describe(routed.session)}. Its earlier turns are the context again.",
            command="resume",
        )

    async def branch(self, ctx: CommandContext) -> Outbound:
        routed = await self._engine.branch(ctx.source, title=ctx.args or None, fence=ctx.fence)
        parent = routed.ended.id if routed.ended else "none"
        return Outbound(
            routed.session,
            f"Branched into {routed.session.id} (a copy of {parent}); the parent is saved.",
            command="branch",
        )

    async def sessions(self, ctx: CommandContext) -> Outbound:
        source = ctx.source
        mine = await self._store.list_sessions(
            user_id=source.user_id, chat_id=source.chat_id, platform=source.platform, limit=20
        )
        if not mine:
            return Outbound(
                ctx.session, "You have no sessions in this chat yet.", command="sessions"
            )
        current = ctx.session.id if ctx.session else None
        lines = [("→ " if s.id == current else "  ") + describe(s) for s in mine]
        return Outbound(ctx.session, "Your sessions here:\n" + "\n".join(lines), command="sessions")

    async def title(self, ctx: CommandContext) -> Outbound:
        session = self._require(ctx)
        if not ctx.args:
            named = f"“{session.title}”" if session.title else "no title"
            return Outbound(session, f"This session has {named}. Set one with /title <text>.")
        updated = await self._store.set_title(session.id, ctx.args[:200])
        return Outbound(updated, f"Titled this session “{updated.title}”.", command="title")

    async def status(self, ctx: CommandContext) -> Outbound:
        session = ctx.session
        if session is None:
            return Outbound(None, "No session yet: say something to start one.", command="status")
        now = self._clock.now()
        lines = [
            f"Session {session.id}" + (f" “{session.title}”" if session.title else ""),
            f"state {session.state}, age {age(session.created_at, now)}, "
            f"last active {age(session.last_activity_at, now)} ago",
            f"{session.turn_count} turns, about {session.token_estimate} tokens",
            f"agent: {self._agent.name}",
        ]
        cursors = {c.provider: c for c in await self._store.cursors(session.id)}
        for name in self._engine.settings.providers:
            cursor = cursors.get(name)
            delivered = cursor.delivered_seq if cursor else 0
            committed = cursor.committed_seq if cursor else 0
            error = f", last error: {cursor.last_error}" if cursor and cursor.last_error else ""
            lines.append(
                f"memory {name}: {delivered}/{session.turn_count} delivered, "
                f"committed up to {committed}{error}"
            )
        return Outbound(session, "\n".join(lines), command="status")

    async def undo(self, ctx: CommandContext) -> Outbound:
        session = self._require(ctx)
        try:
            count = int(ctx.args) if ctx.args else 1
        except ValueError:
            raise InvalidInput("/undo takes a number of messages, e.g. /undo 2") from None
        entries = await self._store.entries(session.id)
        shown = {entry.seq for entry in visible(entries)}
        seqs = undo_seqs([(e.seq, e.role, e.seq not in shown) for e in entries], count)
        await self._engine.record(
            session.id, Role.SYSTEM, f"/undo {count}", meta={"undo": seqs}, fence=ctx.fence
        )
        refreshed = await self._store.get_session(session.id)
        return Outbound(
            refreshed or session,
            f"Took back {len(seqs)} entries (seq {seqs[0]} to {seqs[-1]}).",
            command="undo",
        )

    async def compress(self, ctx: CommandContext) -> Outbound:
        session = self._require(ctx)
        history = visible(await self._store.entries(session.id))
        summary = await self._agent.summarize(session, history)
        routed = await self._engine.compress(
            ctx.source, summary, title=ctx.args or session.title, fence=ctx.fence
        )
        return Outbound(
            routed.session,
            f"Compressed {len(history)} entries into a summary; continuing in {routed.session.id}.",
            command="compress",
        )

    async def help(self, ctx: CommandContext) -> Outbound:
        return Outbound(ctx.session, help_text(), command="help")

    @staticmethod
    def _require(ctx: CommandContext) -> Session:
        if ctx.session is None:
            raise NotFound("there is no session in this chat yet: say something first")
        return ctx.session
