"""Fact extraction: short, durable statements about a user, from an epoch's transcript.

The local memory provider asks a `FactExtractor` for facts when it archives an
epoch. `OpenAIFactExtractor` asks any OpenAI-compatible chat endpoint
(`base_url`) for a JSON list of facts. A model that is down or answers
something else than a list raises `ProviderUnavailable` (the commit is retried
later); a model that refuses the call (bad key, unknown model) raises
`ProviderRejected` (a dead letter to fix, then redrive).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI

from sessiongate.errors import ConfigError, ProviderRejected, ProviderUnavailable

EXTRACTION_PROMPT = """\
You read a conversation between a user and an assistant and pick out durable facts about \
the user: preferences, circumstances, plans, relationships, and how they like to be helped.
Answer with a JSON array of strings and nothing else. Each string is one short fact, \
written in the third person ("The user ..."), and makes sense on its own later.
Leave out small talk, passing requests, and anything only the assistant said.
Answer [] when nothing is worth remembering."""

# Statuses that no retry can change: the request or its credentials are wrong.
_REFUSED = frozenset({400, 401, 403, 404, 422})
_NO_KEY = "unused"  # local OpenAI-compatible servers need none, the SDK wants one


class FactExtractor(Protocol):
    """Turns an epoch's transcript (one `role: text` line per turn) into facts."""

    async def extract(self, transcript: str) -> list[str]:
        """Short durable facts about the user; an empty list when there are none."""
        ...


@dataclass(frozen=True, slots=True)
class ExtractorSettings:
    """Which OpenAI-compatible model extracts facts, and how. Durations are in seconds.

    The API key is never stored here: `key_env` names the environment variable
    that holds it (unset is fine for servers that need no key).
    """

    base_url: str
    model: str
    key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_facts: int = 20
    max_fact_chars: int = 300
    # A longer transcript is sent in parts of at most this many characters.
    max_input_chars: int = 48_000

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"extractor base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model.strip():
            raise ConfigError("extractor model must name a model")
        if not self.timeout > 0:
            raise ConfigError("extractor timeout must be > 0 seconds")
        for field in ("max_facts", "max_fact_chars", "max_input_chars"):
            if getattr(self, field) < 1:
                raise ConfigError(f"extractor {field} must be 1 or more")


class OpenAIFactExtractor:
    """A `FactExtractor` backed by an OpenAI-compatible chat completions endpoint."""

    def __init__(
        self, settings: ExtractorSettings, *, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self._settings = settings
        # No retries inside the SDK: the outbox retries the whole commit with backoff.
        self._client = AsyncOpenAI(
            api_key=env.get(settings.key_env, "").strip() or _NO_KEY,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=0,
        )

    @property
    def settings(self) -> ExtractorSettings:
        return self._settings

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> OpenAIFactExtractor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def extract(self, transcript: str) -> list[str]:
        """See `FactExtractor.extract`; a long transcript is read in parts."""
        facts: list[str] = []
        for part in parts_of(transcript, self._settings.max_input_chars):
            for fact in await self._extract_part(part):
                if fact not in facts:
                    facts.append(fact)
        return facts[: self._settings.max_facts]

    async def _extract_part(self, transcript: str) -> list[str]:
        settings = self._settings
        what = f"extracting facts with model {settings.model!r} at {settings.base_url}"
        try:
            completion = await self._client.chat.completions.create(
                model=settings.model,
                messages=[
                    {"role": "system", "content": EXTRACTION_PROMPT},
                    {"role": "user", "content": transcript},
                ],
                temperature=0,
            )
        except openai.APIStatusError as exc:
            problem = f"{what}: HTTP {exc.status_code}: {exc.message}"
            if exc.status_code in _REFUSED:
                raise ProviderRejected(
                    f"{problem}; check the model name, and the key in ${settings.key_env}"
                ) from None
            raise ProviderUnavailable(problem) from None
        except openai.OpenAIError as exc:
            raise ProviderUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        content = completion.choices[0].message.content if completion.choices else None
        return parse_facts(
            content or "", max_facts=settings.max_facts, max_chars=settings.max_fact_chars
        )


def parts_of(transcript: str, size: int) -> list[str]:
    """`transcript` in parts of at most `size` characters, cut between lines when possible."""
    parts: list[str] = []
    rest = transcript.strip()
    while len(rest) > size:
        cut = rest.rfind("\n", 0, size)
        cut = cut if cut > 0 else size
        parts.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest:
        parts.append(rest)
    return parts


def parse_facts(content: str, *, max_facts: int, max_chars: int) -> list[str]:
    """The facts of a model's answer: a JSON list of strings (or `{"facts": [...]}`).

    Code fences and text around the list are tolerated; facts are stripped,
    shortened to `max_chars`, deduplicated, at most `max_facts`. Anything else
    raises `ProviderUnavailable`, so the commit is retried.
    """
    value = _json_list(content)
    if value is None:
        raise ProviderUnavailable(
            f"the extraction model answered no JSON list of facts: {content[:200]!r}"
        )
    facts: list[str] = []
    for item in value:
        if not isinstance(item, str):
            continue
        fact = " ".join(item.split())
        if len(fact) > max_chars:
            fact = fact[: max_chars - 1].rstrip() + "…"
        if fact and fact not in facts:
            facts.append(fact)
    return facts[:max_facts]


def _json_list(content: str) -> list[Any] | None:
    text = content.strip()
    candidates = [text]
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            value = value.get("facts")
        if isinstance(value, list):
            return value
    return None
