"""The handoff of finished work from a store thread to the event loops awaiting it.

A store thread (the writer, a reader) settles the tasks of a whole batch with one
`call_soon_threadsafe` per event loop: one wake-up of the loop, however many
awaiting coroutines the batch held.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Task:
    """A function of a connection queued for a store thread, and its outcome once known."""

    operation: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    value: Any = None
    error: BaseException | None = None
    read_only: bool = False


def settle(tasks: Sequence[Task]) -> None:
    """Hand settled tasks to the event loops waiting for them: one wake-up per loop."""
    if not tasks:
        return
    loop = tasks[0].loop
    if all(task.loop is loop for task in tasks):
        _wake(loop, tasks)
        return
    by_loop: dict[asyncio.AbstractEventLoop, list[Task]] = {}
    for task in tasks:
        by_loop.setdefault(task.loop, []).append(task)
    for each, group in by_loop.items():
        _wake(each, group)


def _wake(loop: asyncio.AbstractEventLoop, tasks: Sequence[Task]) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, tasks)
    except RuntimeError:
        # The loop is closed: nobody is waiting any more.
        log.warning("%d store operations finished after their event loop closed", len(tasks))


def _resolve(tasks: Sequence[Task]) -> None:
    for task in tasks:
        future = task.future
        if future.done():  # the caller was cancelled; the operation still happened (or not)
            continue
        if task.error is not None:
            future.set_exception(task.error)
        else:
            future.set_result(task.value)
