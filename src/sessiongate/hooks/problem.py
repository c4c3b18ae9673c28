"""A hook or plugin that could not be loaded, and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HookProblem:
    """One hook or plugin skipped at start-up: its name, where it lives, what is wrong."""

    name: str
    location: str
    reason: str

    def __str__(self) -> str:
        return f"hook {self.name!r} ({self.location}) skipped: {self.reason}"
