"""docs/config.md documents every configuration key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sessiongate.config import OpenAIAgentSettings, Settings, _section_of

DOC = Path(__file__).parent.parent / "docs" / "config.md"
# Sections documented in their own page.
ELSEWHERE = {"platforms.telegram", "memory.providers"}


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    found: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        section: Any = _section_of(field.annotation)
        if path == "agent":
            found += [f"agent.{n}" for n in OpenAIAgentSettings.model_fields]
        elif section is not None and path not in ELSEWHERE:
            found += keys(section, f"{path}.")
        else:
            found.append(path)
    return found


def test_every_key_is_documented() -> None:
    text = DOC.read_text()
    missing = [key for key in keys(Settings) if f"`{key}`" not in text]
    assert missing == []
