"""Agents: what answers the user. A small protocol and the two built-in agents."""

from __future__ import annotations

from sessiongate.agent.base import Agent, AgentTurn, MemorySearch
from sessiongate.agent.factory import build_agent

__all__ = ["Agent", "AgentTurn", "MemorySearch", "build_agent"]
