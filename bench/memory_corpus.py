"""Chat text for the memory benchmarks: users, their conversations and their questions.

Deterministic for a seed. Every user has a few favourite topics; a conversation
is a run of user/assistant exchanges about one or two topics, drawn from a
vocabulary of 192 topic words (16 for each of 12 topics) and 27 common ones, so
a user's archive holds words that recur across their sessions (what recall has
to rank) and words of other topics (what it has to skip). A question is what a
user might send next: one of their topics, phrased like the messages of the
conversations.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

TOPICS: dict[str, tuple[str, ...]] = {
    "travel": (
        "flight", "Lisbon", "hotel", "train", "passport", "itinerary", "Kyoto", "luggage",
        "visa", "beach", "hostel", "layover", "ferry", "museum", "Porto", "rental",
    ),
    "cooking": (
        "lentils", "cumin", "risotto", "sourdough", "oven", "recipe", "garlic", "curry",
        "pasta", "basil", "starter", "saffron", "braise", "marinade", "dumplings", "tahini",
    ),
    "programming": (
        "python", "asyncio", "postgres", "index", "migration", "docker", "regex", "deadlock",
        "pytest", "refactor", "websocket", "typing", "profiler", "container", "cache", "query",
    ),
    "fitness": (
        "running", "knee", "sleep", "protein", "marathon", "stretching", "yoga", "cycling",
        "posture", "intervals", "squats", "hydration", "recovery", "tendon", "cadence", "swim",
    ),
    "money": (
        "budget", "mortgage", "savings", "invoice", "taxes", "pension", "stocks", "rent",
        "insurance", "loan", "dividends", "spreadsheet", "refund", "subscription", "bank", "fees",
    ),
    "garden": (
        "tomatoes", "compost", "roses", "seeds", "watering", "soil", "pruning", "greenhouse",
        "aphids", "mulch", "seedlings", "hedge", "lavender", "slugs", "fertiliser", "orchard",
    ),
    "music": (
        "guitar", "chords", "piano", "scales", "concert", "jazz", "metronome", "ukulele",
        "tuning", "rhythm", "setlist", "amplifier", "choir", "sheet", "arpeggio", "vinyl",
    ),
    "family": (
        "birthday", "daughter", "school", "gift", "wedding", "grandmother", "holiday", "party",
        "homework", "babysitter", "nephew", "anniversary", "playground", "reunion", "son", "twins",
    ),
    "work": (
        "meeting", "deadline", "manager", "presentation", "promotion", "slides", "quarterly",
        "report", "interview", "colleague", "roadmap", "standup", "contract", "salary", "hiring",
        "offsite",
    ),
    "pets": (
        "dog", "vet", "puppy", "cat", "leash", "grooming", "kibble", "training", "walks",
        "adoption", "aquarium", "parrot", "litter", "vaccination", "kennel", "hamster",
    ),
    "home": (
        "kitchen", "boiler", "paint", "plumber", "radiator", "shelves", "mould", "insulation",
        "landlord", "furniture", "curtains", "tiles", "drill", "roof", "window", "heating",
    ),
    "reading": (
        "novel", "chapter", "author", "library", "poetry", "thriller", "biography", "audiobook",
        "bookclub", "essay", "trilogy", "kindle", "translation", "classics", "memoir", "fantasy",
    ),
}  # fmt: skip

COMMON = (
    "week", "today", "tomorrow", "weekend", "morning", "evening", "plan", "idea", "problem",
    "advice", "cheap", "quick", "simple", "better", "again", "later", "first", "last",
    "friend", "partner", "city", "price", "time", "list", "notes", "steps", "option",
)  # fmt: skip

USER_SAYS = (
    "can you help me with {a} and {b} this {c}?",
    "what is the best way to deal with {a} when {b} is involved?",
    "remind me what we said about {a} last {c}",
    "I am planning something around {a}, any tips on {b}?",
    "how do I fix the {a}? it keeps messing up my {b}",
    "is {a} really better than {b} or is that a myth?",
    "my {c} plan is {a} then {b}, does that sound right?",
    "I tried {a} again but the {b} was a problem",
    "give me a short list of {a} ideas, nothing with {b}",
    "what should I ask about {a} before I commit to {b}?",
)
ASSISTANT_SAYS = (
    "For {a}, start with {b} and keep {c} in mind; most people overdo it at first.",
    "A good approach to {a} is to check the {b} first, then decide on {c}.",
    "You mentioned {a} before. Sticking with {b} seems the simple option here.",
    "Try {a} in small steps: {b} one {c}, then review what worked.",
    "The usual trouble with {a} is the {b}. Sort that out and {c} gets easier.",
    "Here is a quick plan: {a} first, {b} second, and leave {c} for later.",
    "It depends on the {b}. If {a} matters most, go for the cheaper {c}.",
    "Good question. {a} and {b} go well together, especially on a {c}.",
)
FACTS = (
    "The user is learning about {a}.",
    "The user prefers {a} over {b}.",
    "The user has a recurring problem with {a}.",
    "The user plans {a} for the {c}.",
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation."""

    role: str  # "user" or "assistant"
    text: str


class Corpus:
    """Users with favourite topics, their conversations and their next questions."""

    def __init__(self, users: int, seed: int = 7) -> None:
        self._rng = random.Random(seed)
        names = sorted(TOPICS)
        self.users = [f"u{index:05d}" for index in range(users)]
        self._favourites = {user: self._rng.sample(names, 3) for user in self.users}

    def _topic(self, user: str) -> str:
        # Mostly a favourite topic; now and then anything, as people wander.
        if self._rng.random() < 0.8:
            return self._rng.choice(self._favourites[user])
        return self._rng.choice(sorted(TOPICS))

    def _fill(self, template: str, topics: Sequence[str]) -> str:
        words = [w for t in topics for w in TOPICS[t]]
        a, b = self._rng.sample(words, 2)
        return template.format(a=a, b=b, c=self._rng.choice(COMMON))

    def conversation(self, user: str, turns: int) -> list[Turn]:
        """`turns` messages, user and assistant alternating, about one or two topics."""
        topics = [self._topic(user) for _ in range(self._rng.choice((1, 1, 2)))]
        said: list[Turn] = []
        for index in range(turns):
            if index % 2 == 0:
                said.append(Turn("user", self._fill(self._rng.choice(USER_SAYS), topics)))
            else:
                said.append(Turn("assistant", self._fill(self._rng.choice(ASSISTANT_SAYS), topics)))
        return said

    def facts(self, user: str, turns: Sequence[Turn]) -> list[str]:
        """The facts an extractor might find in a conversation: none, one or two."""
        words = {
            w.strip("?,.:;").lower() for t in turns if t.role == "user" for w in t.text.split()
        }
        topics = [t for t in TOPICS if words & {w.lower() for w in TOPICS[t]}] or [
            self._topic(user)
        ]
        count = self._rng.choice((0, 1, 1, 2))
        return [self._fill(self._rng.choice(FACTS), topics[:1]) for _ in range(count)]

    def question(self, user: str) -> str:
        """A message the user might send next, about one of their topics."""
        return self._fill(self._rng.choice(USER_SAYS), [self._topic(user)])


def transcript(turns: Sequence[Turn]) -> str:
    """An archive's text, as the local provider writes it: one `role: text` line per turn."""
    return "\n".join(f"{turn.role}: {turn.text}" for turn in turns)
