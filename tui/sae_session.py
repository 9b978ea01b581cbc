"""The SAEs the engine has open for this app: `sae.open` once per folder per engine.

Both the Inspector and the Ablation pane need an SAE opened (and indexed) before
they ask about its features; `SaeSession.open(path)` does that once, shares an
open already under way, and remembers the answer (`hook`, `d_sae`, `alive`, ...).

Notes
- An engine restart forgets its open SAEs, so answers are keyed by the engine's
  pid: after a restart the next `open` asks again.
- `index_tokens` is passed to `sae.open` as `tokens`: None uses the index the
  folder has (any size) and builds one of 1M tokens only when there is none;
  tests set a small number.
- Prefetched pages go straight through the client: the status bar's job list is
  for work the user asked for, and a prefetch flickering there is noise.
- The open itself is shielded: a pane that gives up waiting (a newer request
  replaced it) does not throw away an index half built.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from engine.protocol import FeaturePage, SaeOpened
from tui.link import EngineLink

Progress = Callable[[float], None]


class SaeSession:
    def __init__(self, link: EngineLink, index_tokens: int | None = None):
        self.link, self.index_tokens = link, index_tokens
        self._open: dict[str, tuple[int | None, SaeOpened]] = {}
        self._opening: dict[str, asyncio.Future] = {}
        self._progress: dict[str, list[Progress]] = {}

    def info(self, path: str) -> SaeOpened | None:
        """What `sae.open` said about `path`, if this engine has it open."""
        got = self._open.get(path)
        return got[1] if got and got[0] == self.link.engine_pid else None

    async def open(self, path: str, on_progress: Progress | None = None) -> SaeOpened:
        """Open (and index, if needed) the SAE folder; raises EngineError."""
        if (info := self.info(path)) is not None:
            return info
        if on_progress is not None:
            self._progress.setdefault(path, []).append(on_progress)
        future = self._opening.get(path)
        if future is None or future.done():
            future = self._opening[path] = asyncio.ensure_future(self._open_now(path))
        return await asyncio.shield(future)

    async def _open_now(self, path: str) -> SaeOpened:
        def on_event(event) -> None:
            fraction = event.data.fraction
            if event.kind == "progress" and fraction is not None:
                for report in self._progress.get(path, []):
                    report(fraction)

        try:
            params = {"path": path, "tokens": self.index_tokens}
            info = await self.link.run("sae.open", params, needs_model=True, on_event=on_event)
        finally:
            self._progress.pop(path, None)
        self._open[path] = (self.link.engine_pid, info)
        return info

    async def page(self, path: str, feature: int, background: bool = False) -> FeaturePage:
        """A feature page (the `fetch` of the Inspector's page cache). A `background`
        one (a prefetch) is not a job the user started: it stays out of the job list."""
        await self.open(path)
        params = {"path": path, "feature": feature}
        if background and self.link.client is not None:
            return await self.link.client.call("feature.page", params)
        return await self.link.run("feature.page", params, needs_model=True)
