"""Long-term memory: the provider contract, cursor delivery and commit epochs."""

from sessiongate.memory.provider import (
    CommitOutcome,
    Forgetting,
    MemoryProvider,
    ProviderSession,
    RecallHit,
    RecallScope,
    Reconciling,
)
from sessiongate.memory.recall import Recaller, memory_block
from sessiongate.memory.registry import build_providers

__all__ = [
    "CommitOutcome",
    "Forgetting",
    "MemoryProvider",
    "ProviderSession",
    "RecallHit",
    "RecallScope",
    "Recaller",
    "Reconciling",
    "build_providers",
    "memory_block",
]
