"""The memory archive of the in-memory store: dicts, and BM25 computed in Python.

It follows `sessiongate.store.archive` to the letter, with the same BM25 the
SQLite store gets from FTS5 (without its stemming: words match as they are).
Every operation holds the memory store's lock, so it is one transaction with
the store's own operations, and fails like them once the store is closed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime

from sessiongate.models import Entry
from sessiongate.store import intake
from sessiongate.store.archive import (
    ArchiveHit,
    EpochArchive,
    MemoryKind,
    StagedTurn,
    checked_archive,
    checked_facts,
    checked_forget,
    checked_turns,
    search_limit,
    search_terms,
    snippet,
    words,
)

# The usual BM25 parameters, as FTS5's `bm25()` uses them.
_K1 = 1.2
_B = 0.75


@dataclass(frozen=True, slots=True)
class _Item:
    """An archive or a fact, with its word counts for ranking."""

    id: int
    kind: MemoryKind
    user_id: str | None
    platform: str
    session_id: str
    epoch: int
    first_seq: int
    last_seq: int
    text: str
    created_at: datetime
    counts: Counter[str]
    length: int


@dataclass(frozen=True, slots=True)
class _Staged:
    user_id: str | None
    turn: StagedTurn


class MemoryArchive:
    """`ArchiveStore` in process memory, sharing the memory store's lock."""

    def __init__(self, opened: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        self._opened = opened
        self._staged: dict[str, dict[int, _Staged]] = {}
        self._items: dict[int, _Item] = {}
        self._last_id = 0

    async def stage(self, user_id: str | None, session_id: str, entries: Sequence[Entry]) -> None:
        """See `ArchiveStore.stage`."""
        async with self._opened():
            checked_turns(session_id, entries)
            staged = self._staged.setdefault(session_id, {})
            for entry in entries:
                if entry.seq not in staged:
                    at = intake.utc(entry.created_at, "staged entry time")
                    turn = StagedTurn(entry.seq, entry.role, entry.text, at)
                    staged[entry.seq] = _Staged(user_id, turn)

    async def staged(self, session_id: str, *, first_seq: int, last_seq: int) -> list[StagedTurn]:
        """See `ArchiveStore.staged`."""
        async with self._opened():
            staged = self._staged.get(session_id, {})
            return [staged[seq].turn for seq in sorted(staged) if first_seq <= seq <= last_seq]

    async def staged_count(self, session_id: str) -> int:
        """See `ArchiveStore.staged_count`."""
        async with self._opened():
            return len(self._staged.get(session_id, {}))

    async def has_epoch(
        self, session_id: str, *, epoch: int, first_seq: int, last_seq: int
    ) -> bool:
        """See `ArchiveStore.has_epoch`."""
        async with self._opened():
            found = self._epoch_archive(session_id, epoch)
            return found is not None and (found.first_seq, found.last_seq) == (
                first_seq,
                last_seq,
            )

    async def release_staged(self, session_id: str, *, upto_seq: int) -> int:
        """See `ArchiveStore.release_staged`."""
        async with self._opened():
            return self._release(session_id, upto_seq)

    async def archive_epoch(self, archive: EpochArchive, *, facts: Sequence[str] = ()) -> bool:
        """See `ArchiveStore.archive_epoch`."""
        async with self._opened():
            archive = checked_archive(archive)
            kept = checked_facts(facts)
            found = self._epoch_archive(archive.session_id, archive.epoch)
            if found is not None and (found.first_seq, found.last_seq) == (
                archive.first_seq,
                archive.last_seq,
            ):
                self._release(archive.session_id, archive.last_seq)
                return False
            for item in list(self._items.values()):
                if (item.session_id, item.epoch) == (archive.session_id, archive.epoch):
                    del self._items[item.id]
            self._add(MemoryKind.ARCHIVE, archive, archive.text)
            for fact in kept:
                self._add(MemoryKind.FACT, archive, fact)
            self._release(archive.session_id, archive.last_seq)
            return True

    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int,
        platform: str | None = None,
        exclude_session_id: str | None = None,
    ) -> list[ArchiveHit]:
        """See `ArchiveStore.search`."""
        async with self._opened():
            terms = search_terms(query)
            limit = search_limit(limit)
            if not terms or limit == 0:
                return []
            candidates = [
                item
                for item in self._items.values()
                if item.user_id == user_id
                and (platform is None or item.platform == platform)
                and item.session_id != exclude_session_id
                and any(term in item.counts for term in terms)
            ]
            scores = self._bm25(candidates, terms)
            candidates.sort(key=lambda i: (scores[i.id], i.created_at, i.id), reverse=True)
            return [
                ArchiveHit(
                    kind=item.kind,
                    session_id=item.session_id,
                    text=snippet(item.text, terms),
                    score=scores[item.id],
                    created_at=item.created_at,
                )
                for item in candidates[:limit]
            ]

    async def forget(self, *, user_id: str | None = None, session_id: str | None = None) -> int:
        """See `ArchiveStore.forget`."""
        async with self._opened():
            checked_forget(user_id, session_id)
            gone = [
                item.id
                for item in self._items.values()
                if (user_id is not None and item.user_id == user_id)
                or (session_id is not None and item.session_id == session_id)
            ]
            for item_id in gone:
                del self._items[item_id]
            erased = len(gone)
            for staged_session, staged in list(self._staged.items()):
                if staged_session == session_id:
                    erased += len(self._staged.pop(staged_session))
                    continue
                for seq, row in list(staged.items()):
                    if user_id is not None and row.user_id == user_id:
                        del staged[seq]
                        erased += 1
            return erased

    # -- helpers, under the lock -------------------------------------------------------

    def _epoch_archive(self, session_id: str, epoch: int) -> _Item | None:
        return next(
            (
                item
                for item in self._items.values()
                if item.kind is MemoryKind.ARCHIVE
                and (item.session_id, item.epoch) == (session_id, epoch)
            ),
            None,
        )

    def _release(self, session_id: str, upto_seq: int) -> int:
        staged = self._staged.get(session_id, {})
        released = [seq for seq in staged if seq <= upto_seq]
        for seq in released:
            del staged[seq]
        if not staged:
            self._staged.pop(session_id, None)
        return len(released)

    def _add(self, kind: MemoryKind, archive: EpochArchive, text: str) -> None:
        self._last_id += 1
        found = words(text)
        self._items[self._last_id] = _Item(
            id=self._last_id,
            kind=kind,
            user_id=archive.user_id,
            platform=archive.platform,
            session_id=archive.session_id,
            epoch=archive.epoch,
            first_seq=archive.first_seq,
            last_seq=archive.last_seq,
            text=text,
            created_at=archive.created_at,
            counts=Counter(found),
            length=len(found),
        )

    def _bm25(self, candidates: Sequence[_Item], terms: Sequence[str]) -> dict[int, float]:
        """Okapi BM25 of each candidate, with corpus statistics over every row (as FTS5)."""
        corpus = len(self._items)
        average = sum(item.length for item in self._items.values()) / max(1, corpus)
        idf: dict[str, float] = {}
        for term in terms:
            having = sum(1 for item in self._items.values() if term in item.counts)
            # FTS5's IDF, floored the same way so a word in most rows still counts a little.
            idf[term] = max(1e-6, math.log((corpus - having + 0.5) / (having + 0.5)))
        scores: dict[int, float] = {}
        for item in candidates:
            norm = _K1 * (1 - _B + _B * item.length / max(average, 1e-9))
            scores[item.id] = sum(
                idf[term] * item.counts[term] * (_K1 + 1) / (item.counts[term] + norm)
                for term in terms
                if term in item.counts
            )
        return scores
