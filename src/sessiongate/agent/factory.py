"""The agent the configuration names."""

from __future__ import annotations

from sessiongate.agent.base import Agent
from sessiongate.agent.offline import OfflineAgent
from sessiongate.config import OfflineAgentSettings, OpenAIAgentSettings


def build_agent(settings: OfflineAgentSettings | OpenAIAgentSettings) -> Agent:
    """The configured agent (the discriminated `agent.kind` has already been checked)."""
    if isinstance(settings, OpenAIAgentSettings):
        from sessiongate.agent.openai_agent import OpenAIAgent

        return OpenAIAgent(settings)
    return OfflineAgent()
