"""The built-in local memory provider: memory that works with nothing installed.

It keeps everything in the store's own database, through the store's memory
archive (`sessiongate.store.archive`):

- `deliver` stages the entries (idempotent by session and seq), so a batch
  sent twice is held once and `uncommitted_count` can reconcile the cursor;
- `commit` archives the epoch's staged turns as one text per epoch (one
  `role: text` line per turn, dated by its last turn) and, when a
  `FactExtractor` is configured, the short facts about the user it extracts,
  in one transaction that also releases the staged turns. An epoch already
  archived with the same range is not archived again and not extracted again,
  so a retried commit (its acknowledgement lost) changes nothing;
- `recall` ranks the user's own archives and facts (BM25 on SQLite and in
  memory, `ts_rank` on PostgreSQL) and returns snippets with their session ids
  and dates. Never another user's: every search names its user.

Tool entries are staged (the count must match the cursor) but left out of the
archive text: they are what the agent read, not what was said.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sessiongate.errors import ConfigError, InvalidInput
from sessiongate.memory.extractor import FactExtractor
from sessiongate.memory.provider import CommitOutcome, ProviderSession, RecallHit, RecallScope
from sessiongate.models import Entry, Role
from sessiongate.store.archive import ArchiveStore, EpochArchive, StagedTurn
from sessiongate.validation import check_text

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BATCH", "MAX_TURN_CHARS", "LocalProvider", "transcript"]

DEFAULT_MAX_BATCH = 200
MAX_TURN_CHARS = 4_000
"""The most characters of one turn kept in an archive (a pasted document is cut)."""


def transcript(turns: Sequence[StagedTurn]) -> str:
    """The archive text of an epoch: one `role: text` line per turn said, tools left out."""
    lines: list[str] = []
    for turn in turns:
        text = turn.text.strip()
        if turn.role is Role.TOOL or not text:
            continue
        if len(text) > MAX_TURN_CHARS:
            text = text[: MAX_TURN_CHARS - 1].rstrip() + "…"
        lines.append(f"{turn.role.value}: {text}")
    return "\n".join(lines)


class LocalProvider:
    """A `MemoryProvider` (with `Reconciling` and `Forgetting`) on the store's archive."""

    def __init__(
        self,
        archive: ArchiveStore,
        *,
        name: str = "local",
        max_batch: int = DEFAULT_MAX_BATCH,
        extractor: FactExtractor | None = None,
    ) -> None:
        check_text(name, what="provider name")
        if not name.strip():
            raise ConfigError("the local memory provider needs a non-empty name")
        if max_batch < 1:
            raise ConfigError(f"local memory max_batch must be 1 or more, got {max_batch}")
        self._archive = archive
        self._name = name
        self._max_batch = max_batch
        self._extractor = extractor

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_batch(self) -> int:
        return self._max_batch

    async def deliver(
        self, session: ProviderSession, entries: Sequence[Entry], *, idempotency_key: str
    ) -> None:
        """Stage the entries (consecutive seqs of this session, in order).

        `idempotency_key` is not needed: staging is idempotent by session and seq.
        """
        if not entries:
            return
        if len(entries) > self._max_batch:
            raise InvalidInput(
                f"{len(entries)} entries for session {session.session_id} exceed the "
                f"local memory batch limit of {self._max_batch}"
            )
        first = entries[0].seq
        if [entry.seq for entry in entries] != list(range(first, first + len(entries))):
            raise InvalidInput(
                f"entries delivered to session {session.session_id} are not consecutive seqs "
                "in order"
            )
        await self._archive.stage(session.user_id, session.session_id, entries)

    async def uncommitted_count(self, session: ProviderSession) -> int:
        """How many delivered entries of the session wait for a commit."""
        return await self._archive.staged_count(session.session_id)

    async def commit(
        self,
        session: ProviderSession,
        *,
        epoch: int,
        first_seq: int,
        last_seq: int,
        idempotency_key: str,
    ) -> CommitOutcome:
        """Archive seqs `first_seq..last_seq` as epoch `epoch`, with extracted facts.

        Not accepted (the gateway replays the epoch from the ledger) if a staged
        entry of the range is missing. `idempotency_key` is not needed: an epoch is
        archived at most once per range.
        """
        sid = session.session_id
        if await self._archive.has_epoch(sid, epoch=epoch, first_seq=first_seq, last_seq=last_seq):
            await self._archive.release_staged(sid, upto_seq=last_seq)
            return CommitOutcome(detail=f"epoch {epoch} was already archived")
        turns = await self._archive.staged(sid, first_seq=first_seq, last_seq=last_seq)
        expected = last_seq - first_seq + 1
        if [turn.seq for turn in turns] != list(range(first_seq, last_seq + 1)):
            return CommitOutcome(
                accepted=False,
                detail=f"only {len(turns)} of the {expected} entries of seqs "
                f"{first_seq}-{last_seq} are staged; replaying them",
            )
        text = transcript(turns)
        facts = await self._facts(session, epoch, turns, text)
        archived = await self._archive.archive_epoch(
            EpochArchive(
                user_id=session.user_id,
                platform=session.platform,
                session_id=sid,
                epoch=epoch,
                first_seq=first_seq,
                last_seq=last_seq,
                text=text,
                created_at=turns[-1].created_at,
            ),
            facts=facts,
        )
        state = "archived" if archived else "already archived"
        return CommitOutcome(detail=f"epoch {epoch} {state} with {len(facts)} facts")

    async def _facts(
        self, session: ProviderSession, epoch: int, turns: Sequence[StagedTurn], text: str
    ) -> list[str]:
        """The extractor's facts; none without an extractor, a user, or anything they said."""
        said = any(turn.role is Role.USER and turn.text.strip() for turn in turns)
        if self._extractor is None or session.user_id is None or not said:
            return []
        facts = await self._extractor.extract(text)
        log.info(
            "extracted %d facts from epoch %d of session %s", len(facts), epoch, session.session_id
        )
        return facts

    async def recall(self, scope: RecallScope, query: str, *, limit: int) -> list[RecallHit]:
        """The user's archives and facts best matching `query`, best first.

        Only `scope.user_id`'s (on `scope.platform` when given), never from
        `scope.exclude_session_id`.
        """
        hits = await self._archive.search(
            scope.user_id,
            query,
            limit=limit,
            platform=scope.platform,
            exclude_session_id=scope.exclude_session_id,
        )
        return [
            RecallHit(
                provider=self._name,
                text=hit.text,
                score=hit.score,
                session_id=hit.session_id,
                created_at=hit.created_at,
            )
            for hit in hits
        ]

    async def forget(self, *, user_id: str | None, session: ProviderSession | None) -> None:
        """Erase a session's staged turns, archives and facts, or all of a user's."""
        if user_id is None and session is None:
            return
        await self._archive.forget(
            user_id=user_id, session_id=None if session is None else session.session_id
        )
