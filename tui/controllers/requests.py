"""The asyncio tasks of a pane controller's engine requests.

A controller sends each request from a task of its own, in a named group: starting
a request in an exclusive group cancels the group's older one (a newer threshold or
tree replaces the older), and a bug in any request is not lost with its task: it
goes to the engine log and, as an error line, to the pane.
"""

from __future__ import annotations

import asyncio
from typing import Callable


class RequestTasks:
    def __init__(self, name: str, log: Callable[[str], None], show_error: Callable[[str], None]) -> None:
        self.name, self.log, self.show_error = name, log, show_error
        self.latest: dict[str, asyncio.Task] = {}  # the latest of each exclusive group
        self.running: set[asyncio.Task] = set()

    def spawn(self, group: str, coro, exclusive: bool = True) -> asyncio.Task:
        if exclusive and (old := self.latest.get(group)) is not None and not old.done():
            old.cancel()
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._surface)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        if exclusive:
            self.latest[group] = task
        return task

    def _surface(self, task: asyncio.Task) -> None:
        if not task.cancelled() and (e := task.exception()) is not None:
            self.log(f"{self.name}: {type(e).__name__}: {e}")
            self.show_error(f"{type(e).__name__}: {e}")

    async def idle(self) -> None:
        """Wait for every request under way (tests)."""
        while self.running:
            await asyncio.gather(*list(self.running), return_exceptions=True)

    def close(self) -> None:
        for task in list(self.running):
            task.cancel()
