"""Python plugins: objects implementing hooks of the spec, found through entry points.

A distribution offers a plugin with an entry point in the `sessiongate.plugins`
group naming a module, an object, or a class (instantiated without arguments).
Each plugin is checked against `sessiongate.hooks.spec` when it is registered: an
unknown hook name or a signature that cannot take the spec's arguments rejects
the whole plugin with a message saying what to change.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from sessiongate.errors import HookError
from sessiongate.hooks.problem import HookProblem
from sessiongate.hooks.spec import HOOK_HINTS, HOOK_PREFIX, HOOK_SPECS

logger = logging.getLogger(__name__)

#: The entry-point group plugins register in.
PLUGIN_GROUP = "sessiongate.plugins"


@dataclass(frozen=True, slots=True)
class HookImpl:
    """One plugin's implementation of one hook, with the arguments it takes."""

    plugin: str
    hook: str
    function: Callable[..., Any]
    parameters: frozenset[str]
    takes_any: bool  # has **kwargs: gets every argument

    @property
    def label(self) -> str:
        """`<plugin>.<hook>`, as logs and outcomes name it."""
        return f"{self.plugin}.{self.hook}"

    def arguments(self, available: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a call: those of `available` it declares."""
        if self.takes_any:
            return dict(available)
        return {name: value for name, value in available.items() if name in self.parameters}


@dataclass(frozen=True, slots=True)
class Plugin:
    """A registered plugin: its name, the object, and its hook implementations."""

    name: str
    obj: object
    hooks: Mapping[str, HookImpl]


def _bare(signature: inspect.Signature) -> inspect.Signature:
    """The signature without annotations: what a message should show."""
    return signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


def _check_hook(plugin: str, hook: str, function: Callable[..., Any]) -> tuple[list[str], HookImpl]:
    """What is wrong with `function` as an implementation of `hook`, and the implementation."""
    spec = HOOK_SPECS[hook]
    provided = {p.name for p in spec.parameters.values() if p.kind is not p.VAR_KEYWORD}
    open_context = any(p.kind is p.VAR_KEYWORD for p in spec.parameters.values())
    wanted = f"{hook}{_bare(spec)}"
    problems: list[str] = []
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        problems.append(f"{hook}: its signature cannot be read ({exc}); expected {wanted}")
        signature = inspect.Signature()
    names: set[str] = set()
    takes_any = False
    for param in signature.parameters.values():
        required = param.default is param.empty
        if param.kind is param.VAR_KEYWORD:
            takes_any = True
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.kind is param.POSITIONAL_ONLY:
            if required:
                problems.append(
                    f"{hook}: parameter {param.name!r} is positional-only, but hooks are "
                    f"called by keyword; expected {wanted}"
                )
        elif param.name in provided or (open_context and not required):
            names.add(param.name)
        elif open_context:
            problems.append(
                f"{hook}: parameter {param.name!r} is not always provided; give it a "
                f"default or drop it; expected {wanted}"
            )
        else:
            problems.append(f"{hook}: unknown parameter {param.name!r}; expected {wanted}")
    return problems, HookImpl(plugin, hook, function, frozenset(names), takes_any)


def _hook_names(obj: object) -> list[str]:
    return sorted(name for name in dir(obj) if name.startswith(HOOK_PREFIX))


def make_plugin(obj: object, *, name: str | None = None) -> Plugin:
    """Check `obj` against the spec and wrap it; raise `HookError` naming every problem.

    `name` defaults to the object's `name` attribute, else its module or class name.
    """
    if inspect.isclass(obj):
        raise HookError(f"plugin {obj.__name__!r} is a class; register an instance of it")
    label = name or getattr(obj, "name", None) or getattr(obj, "__name__", type(obj).__name__)
    label = str(label)
    problems: list[str] = []
    hooks: dict[str, HookImpl] = {}
    for hook in _hook_names(obj):
        function = getattr(obj, hook)
        if hook not in HOOK_SPECS:
            hint = HOOK_HINTS.get(hook, f"known hooks: {', '.join(sorted(HOOK_SPECS))}")
            problems.append(f"unknown hook {hook!r} ({hint})")
        elif not callable(function):
            problems.append(f"{hook} is not callable (it is a {type(function).__name__})")
        else:
            found, hooks[hook] = _check_hook(label, hook, function)
            problems.extend(found)
    if not problems and not hooks:
        problems.append(f"implements no hook; known hooks: {', '.join(sorted(HOOK_SPECS))}")
    if problems:
        raise HookError(f"plugin {label!r} rejected: " + "; ".join(problems))
    return Plugin(label, obj, MappingProxyType(hooks))


def load_entry_point_plugins(group: str = PLUGIN_GROUP) -> tuple[list[Plugin], list[HookProblem]]:
    """Every plugin of the entry-point `group`; broken ones are reported and skipped."""
    plugins: list[Plugin] = []
    problems: list[HookProblem] = []
    seen: set[str] = set()
    for point in entry_points(group=group):
        location = f"entry point {point.name} = {point.value}"
        if point.name in seen:
            problems.append(HookProblem(point.name, location, "another plugin has this name"))
            logger.warning("%s", problems[-1])
            continue
        try:
            obj = point.load()
            if inspect.isclass(obj):
                obj = obj()
            plugin = make_plugin(obj, name=point.name)
        except HookError as exc:
            problems.append(HookProblem(point.name, location, str(exc)))
            logger.warning("%s", problems[-1])
            continue
        except Exception as exc:
            # Isolation point: one plugin failing to import must not stop the others.
            problems.append(
                HookProblem(point.name, location, f"cannot be loaded: {type(exc).__name__}: {exc}")
            )
            logger.warning("%s", problems[-1], exc_info=exc)
            continue
        seen.add(point.name)
        plugins.append(plugin)
    return plugins, problems
