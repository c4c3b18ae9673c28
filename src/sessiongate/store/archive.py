"""The memory archive: long-term memory kept in the store's own database.

The built-in local memory provider keeps everything here, so memory works with
nothing installed. Three kinds of rows, all per user:

- staged turns: delivered ledger entries waiting for their epoch's commit
  (idempotent by session and seq; the commit that archives them removes them);
- archives: one row per commit epoch of a session, the text of its turns;
- facts: short durable statements about the user extracted from an epoch.

Archiving an epoch is idempotent: one archive per (session, epoch). The same
epoch and range archived again changes nothing; the same epoch with another
range (an attempt whose commit was never recorded, followed by one with a
longer range) replaces the earlier attempt and its facts, so only the attempt
the gateway recorded remains. Search ranks a user's archives and facts with
BM25 (SQLite FTS5, the memory store) or `ts_rank` (PostgreSQL) and never
returns another user's rows. Query text is reduced to plain words before it
reaches any full-text syntax, so no user text is ever read as a query operator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from sessiongate.errors import ConfigError, InvalidInput
from sessiongate.models import Entry, Role
from sessiongate.store import intake
from sessiongate.validation import check_identifier, check_text

MAX_TERMS = 32
"""Words of a query used for search: enough for any question, bounded in cost."""

MAX_LIMIT = 100
"""The most hits one search returns."""

SNIPPET_CHARS = 320
"""The length of an archive's snippet around its first matching word."""

_WORD = re.compile(r"[^\W_]+")


class MemoryKind(StrEnum):
    """What a search hit is: an archived epoch or an extracted fact."""

    ARCHIVE = "archive"
    FACT = "fact"


@dataclass(frozen=True, slots=True)
class StagedTurn:
    """A delivered ledger entry waiting for its epoch's commit."""

    seq: int
    role: Role
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EpochArchive:
    """The turns of one commit epoch (`first_seq..last_seq`) of a session, for its user.

    `user_id` is None for a session without a user (a channel): it is archived
    (and forgotten with its session) but no user's search ever returns it.
    """

    user_id: str | None
    platform: str
    session_id: str
    epoch: int
    first_seq: int
    last_seq: int
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ArchiveHit:
    """One search result: a snippet of an archive, or a whole fact.

    `score` is higher for a better match; scores compare within one search only.
    """

    kind: MemoryKind
    session_id: str
    text: str
    score: float
    created_at: datetime


class ArchiveStore(Protocol):
    """The memory archive of one store. Each operation is one transaction."""

    async def stage(self, user_id: str | None, session_id: str, entries: Sequence[Entry]) -> None:
        """Keep delivered entries until their epoch is archived; seqs already staged are kept."""
        ...

    async def staged(self, session_id: str, *, first_seq: int, last_seq: int) -> list[StagedTurn]:
        """The staged turns of a session with `first_seq <= seq <= last_seq`, by seq."""
        ...

    async def staged_count(self, session_id: str) -> int:
        """How many turns of a session are staged (delivered and not yet archived)."""
        ...

    async def has_epoch(
        self, session_id: str, *, epoch: int, first_seq: int, last_seq: int
    ) -> bool:
        """Whether this epoch of the session is archived with exactly this range."""
        ...

    async def release_staged(self, session_id: str, *, upto_seq: int) -> int:
        """Drop the staged turns of a session up to `upto_seq`; how many were dropped."""
        ...

    async def archive_epoch(self, archive: EpochArchive, *, facts: Sequence[str] = ()) -> bool:
        """Archive an epoch with its facts and release its staged turns, in one transaction.

        False (writing no archive and no fact) if this epoch is already archived
        with this range. An archive of the same epoch with another range is
        replaced, with its facts. Facts are stripped; empty ones are skipped.
        """
        ...

    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int,
        platform: str | None = None,
        exclude_session_id: str | None = None,
    ) -> list[ArchiveHit]:
        """The best matches of `query` among `user_id`'s archives and facts, best first.

        Only rows of this exact user (and of `platform`, when given); never rows of
        `exclude_session_id`. A query without words matches nothing.
        """
        ...

    async def forget(self, *, user_id: str | None = None, session_id: str | None = None) -> int:
        """Erase everything of a user, or of a session (or both); how many rows went.

        Staged turns, archives and facts alike. `InvalidInput` if neither is given.
        """
        ...


@runtime_checkable
class Archiving(Protocol):
    """A store with a memory archive."""

    @property
    def archive(self) -> ArchiveStore:
        """The store's memory archive."""
        ...


def archive_of(store: object) -> ArchiveStore:
    """The memory archive of `store`; `ConfigError` if this kind of store has none."""
    if not isinstance(store, Archiving):
        raise ConfigError(
            f"the {type(store).__name__} has no memory archive; the local memory provider "
            "needs a SQLite, PostgreSQL or memory store"
        )
    return store.archive


# -- values going in ------------------------------------------------------------------


def checked_archive(archive: EpochArchive) -> EpochArchive:
    """`archive` checked (`InvalidInput` naming the problem), its time in UTC."""
    check_identifier(archive.session_id, what="archive session id")
    if archive.user_id is not None:
        check_text(archive.user_id, what="archive user id")
    check_text(archive.platform, what="archive platform")
    check_text(archive.text, what="archive text")
    if not 1 <= archive.first_seq <= archive.last_seq:
        raise InvalidInput(
            f"archive range {archive.first_seq}-{archive.last_seq} of session "
            f"{archive.session_id} is not a range of seqs from 1"
        )
    if archive.epoch < 1:
        raise InvalidInput(f"archive epoch {archive.epoch} must be 1 or more")
    return replace(archive, created_at=intake.utc(archive.created_at, "archive time"))


def checked_facts(facts: Sequence[str]) -> list[str]:
    """Facts stripped, empty ones dropped, duplicates dropped, each checked."""
    kept: list[str] = []
    for fact in facts:
        if not isinstance(fact, str):
            raise InvalidInput(f"a fact must be text, got {type(fact).__name__}")
        text = " ".join(fact.split())
        if text and text not in kept:
            check_text(text, what="fact")
            kept.append(text)
    return kept


def checked_turns(session_id: str, entries: Sequence[Entry]) -> None:
    """Refuse entries of another session, or entries that cannot be stored."""
    check_identifier(session_id, what="staged session id")
    for entry in entries:
        if entry.session_id != session_id:
            raise InvalidInput(
                f"entry {entry.session_id}:{entry.seq} staged for session {session_id}"
            )
        check_text(entry.text, what="staged entry text")
        intake.utc(entry.created_at, "staged entry time")


def checked_forget(user_id: str | None, session_id: str | None) -> None:
    """Refuse a forget that names nobody."""
    if user_id is None and session_id is None:
        raise InvalidInput("forget needs a user id or a session id; neither was given")
    if user_id is not None:
        check_text(user_id, what="user id")
    if session_id is not None:
        check_text(session_id, what="session id")


# -- search text ------------------------------------------------------------------------


def search_terms(query: str) -> list[str]:
    """The distinct words of `query`, lowercased, in order, at most `MAX_TERMS`.

    A word is a run of letters and digits: quotes, `*`, `-`, parentheses and every
    other symbol only separate words, so nothing of the query is syntax.
    """
    terms: list[str] = []
    for word in _WORD.findall(query):
        term = word.lower()
        if term not in terms:
            terms.append(term)
            if len(terms) == MAX_TERMS:
                break
    return terms


def words(text: str) -> list[str]:
    """The words of a document, lowercased, as `search_terms` reads a query."""
    return [word.lower() for word in _WORD.findall(text)]


def search_limit(limit: int) -> int:
    """`limit` bounded to `0..MAX_LIMIT`."""
    return max(0, min(int(limit), MAX_LIMIT))


def snippet(text: str, terms: Sequence[str], *, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around its first word starting with a term.

    Whitespace is collapsed; a cut end is marked with `…`. Without such a word
    (a match through stemming), the snippet is the start of the text.
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    starts = [
        found.start()
        for term in terms
        if (found := re.search(r"\b" + re.escape(term), flat, re.IGNORECASE)) is not None
    ]
    hit = min(starts, default=0)
    start = max(0, hit - width // 3)
    end = min(len(flat), start + width)
    start = max(0, end - width)
    if start > 0:
        space = flat.find(" ", start, hit)
        start = space + 1 if space >= 0 else start
    if end < len(flat):
        space = flat.rfind(" ", hit, end)
        end = space if space > hit else end
    return ("…" if start > 0 else "") + flat[start:end] + ("…" if end < len(flat) else "")
