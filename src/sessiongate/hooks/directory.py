"""Directory hooks in the Hermes layout, loaded unchanged.

```
<hooks_dir>/<name>/HOOK.yaml    name, description, events: ["session:*", "agent:end", ...]
<hooks_dir>/<name>/handler.py   def handle(event_type, context) (or async def)
```

A broken hook (bad YAML, missing keys, no handler.py, an import error, no
`handle`) is reported by name with the reason and skipped; the others load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from sessiongate.hooks.events import event_matches
from sessiongate.hooks.problem import HookProblem

logger = logging.getLogger(__name__)

MANIFEST = "HOOK.yaml"
HANDLER = "handler.py"


@dataclass(frozen=True, slots=True)
class DirectoryHook:
    """A loaded directory hook: what it subscribes to and its `handle` function."""

    name: str
    description: str
    events: tuple[str, ...]
    path: Path
    handle: Callable[[str, dict[str, Any]], Any]

    def matches(self, event_type: str) -> bool:
        """Whether one of its event patterns covers `event_type`."""
        return any(event_matches(pattern, event_type) for pattern in self.events)


class _Broken(Exception):
    """Why one hook directory cannot be loaded (internal to this module)."""

    def __init__(self, reason: str, *, name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name


@dataclass(frozen=True, slots=True)
class _Manifest:
    name: str
    description: str
    events: tuple[str, ...]


def _read_manifest(directory: Path) -> _Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise _Broken(f"no {MANIFEST}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _Broken(f"{MANIFEST} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise _Broken(f"{MANIFEST} is not valid YAML: {detail}") from exc
    if not isinstance(data, dict):
        raise _Broken(f"{MANIFEST} must be a mapping with 'name' and 'events'")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Broken(f"{MANIFEST} needs a non-empty 'name'")
    events = data.get("events")
    if not isinstance(events, list) or not events:
        raise _Broken(f"{MANIFEST} needs 'events', a non-empty list", name=name)
    bad = [e for e in events if not isinstance(e, str) or not e or any(c.isspace() for c in e)]
    if bad:
        raise _Broken(f"{MANIFEST} has invalid event names {bad!r}", name=name)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _Broken(f"{MANIFEST} 'description' must be text", name=name)
    return _Manifest(name.strip(), description, tuple(events))


def _module_name(handler: Path) -> str:
    """A module name unique to the handler's path, so same-named hooks never collide."""
    digest = hashlib.sha256(str(handler.resolve()).encode()).hexdigest()[:12]
    slug = re.sub(r"\W", "_", handler.parent.name)
    return f"_sessiongate_hook_{slug}_{digest}"


@contextmanager
def _importable_from(directory: Path) -> Iterator[None]:
    """Let a handler import modules next to it while it loads, and only then."""
    entry = str(directory)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _import_handler(directory: Path) -> ModuleType:
    handler = directory / HANDLER
    if not handler.is_file():
        raise _Broken(f"no {HANDLER}")
    name = _module_name(handler)
    spec = importlib.util.spec_from_file_location(name, handler)
    if spec is None or spec.loader is None:
        raise _Broken(f"{HANDLER} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _importable_from(directory):
            spec.loader.exec_module(module)
    except Exception as exc:
        # Isolation point: whatever a handler does at import, the other hooks load.
        sys.modules.pop(name, None)
        raise _Broken(f"{HANDLER} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _handle_of(module: ModuleType) -> Callable[[str, dict[str, Any]], Any]:
    handle = getattr(module, "handle", None)
    if handle is None:
        raise _Broken(f"{HANDLER} defines no 'handle' function")
    if not callable(handle):
        raise _Broken(f"'handle' in {HANDLER} is not callable")
    try:
        inspect.signature(handle).bind("event:type", {})
    except TypeError as exc:
        raise _Broken(f"'handle' must accept (event_type, context): {exc}") from exc
    except ValueError:
        pass  # no introspectable signature (a builtin): trust it
    return handle  # type: ignore[no-any-return]


def _load_hook(directory: Path) -> DirectoryHook:
    """Load the hook in `directory`; raise `_Broken` saying why it cannot be."""
    manifest = _read_manifest(directory)
    try:
        handle = _handle_of(_import_handler(directory))
    except _Broken as exc:
        exc.name = manifest.name
        raise
    return DirectoryHook(manifest.name, manifest.description, manifest.events, directory, handle)


def load_directory_hooks(hooks_dir: Path) -> tuple[list[DirectoryHook], list[HookProblem]]:
    """Every hook under `hooks_dir`, in directory-name order, and the problems of the rest.

    A missing `hooks_dir` means no hooks. Files and hidden directories beside the
    hook directories are ignored. Each problem is also logged.
    """
    if not hooks_dir.exists():
        return [], []
    if not hooks_dir.is_dir():
        problem = HookProblem(hooks_dir.name, str(hooks_dir), "hooks_dir is not a directory")
        logger.warning("%s", problem)
        return [], [problem]
    hooks: list[DirectoryHook] = []
    problems: list[HookProblem] = []
    by_name: dict[str, Path] = {}
    for directory in sorted(hooks_dir.iterdir()):
        if not directory.is_dir() or directory.name.startswith((".", "__")):
            continue
        try:
            hook = _load_hook(directory)
            if hook.name in by_name:
                raise _Broken(f"another hook has this name ({by_name[hook.name]})", name=hook.name)
        except _Broken as exc:
            problem = HookProblem(exc.name or directory.name, str(directory), exc.reason)
            problems.append(problem)
            logger.warning("%s", problem, exc_info=exc.__cause__)
            continue
        by_name[hook.name] = directory
        hooks.append(hook)
    return hooks, problems
