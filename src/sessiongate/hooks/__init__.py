"""Hooks: Hermes-layout directory hooks and Python plugins, and the dispatcher running them."""

from __future__ import annotations

from sessiongate.hooks.decision import Decision, DecisionKind
from sessiongate.hooks.directory import DirectoryHook, load_directory_hooks
from sessiongate.hooks.dispatcher import HandlerOutcome, HandlerStatus, HookDispatcher
from sessiongate.hooks.events import Event
from sessiongate.hooks.plugins import PLUGIN_GROUP, Plugin, load_entry_point_plugins, make_plugin
from sessiongate.hooks.problem import HookProblem

__all__ = [
    "PLUGIN_GROUP",
    "Decision",
    "DecisionKind",
    "DirectoryHook",
    "Event",
    "HandlerOutcome",
    "HandlerStatus",
    "HookDispatcher",
    "HookProblem",
    "Plugin",
    "load_directory_hooks",
    "load_entry_point_plugins",
    "make_plugin",
]
