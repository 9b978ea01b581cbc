"""The Inspector pane's controller: which feature of which SAE the user wants, the
pages (a client-side cache with prefetch), the history for `b`, and the engine
requests (`sae.open`, `feature.page`, `feature.search`, `feature.live`), as plain
asyncio. It posts typed messages; the pane (`tui/widgets/inspector_pane.py`)
draws them.

Notes
- Keys never wait: `want()` answers a cached page at once; anything else is
  fetched in a task that replaces the previous one, and drawn when its message
  arrives if it is still the feature the user wants.
- A feature out of range is refused with a message (as the CLI does), not clamped.
- `shown` is what the page body shows. When opening another SAE fails, the pane
  puts the SAE field back to the SAE shown, so header and body agree.
- After a page is shown, the features around it and its neighbours are fetched
  in the background, so stepping through them shows each at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from textual.message import Message

from engine.protocol import FeaturePage, LiveActs, SaeOpened, SearchHit
from tui.client import EngineError
from tui.link import EngineLink
from tui.page_cache import PageCache
from tui.sae_paths import short_name
from tui.sae_session import SaeSession

PREFETCH_AROUND = 3
HISTORY = 100
Key = tuple[str, int]


def prefetch_order(feature: int, d_sae: int | None, neighbours: list[int]) -> list[int]:
    """f+1, f-1, f+2, f-2, ... then the neighbours: what the user is likely to ask next."""
    around = [feature + s * d for d in range(1, PREFETCH_AROUND + 1) for s in (1, -1)]
    return [f for f in around + neighbours if f >= 0 and (d_sae is None or f < d_sae) and f != feature]


def out_of_range(feature: int, d_sae: int) -> str | None:
    """The message for a feature the SAE does not have (the CLI's wording), else None."""
    if 0 <= feature < d_sae:
        return None
    return f"feature {feature} is out of range: this SAE has features 0..{d_sae - 1}"


@dataclass
class PageArrived(Message):
    path: str
    feature: int
    page: FeaturePage


@dataclass
class InspectorStatus(Message):
    """A line for the pane's status: what is under way, or an error."""

    text: str
    error: bool = False


@dataclass
class SaeOpenedNow(Message):
    path: str
    info: SaeOpened


@dataclass
class PageFailed(Message):
    """The page the user wants could not be shown; `shown` is the SAE the body still shows."""

    path: str
    feature: int
    error: str
    shown: str | None


class InspectorController:
    def __init__(self, link: EngineLink, saes: SaeSession, post) -> None:
        self.link, self.saes, self.post = link, saes, post
        self.pages = PageCache(saes.page)
        self.current: Key | None = None  # what the user asked for last
        self.shown: Key | None = None  # what the page body shows
        self.history: list[Key] = []
        self._task: asyncio.Task | None = None

    def close(self) -> None:
        self.pages.close()
        if self._task is not None:
            self._task.cancel()

    async def idle(self) -> None:
        """Wait for the page under way (tests)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def d_sae(self, path: str) -> int | None:
        info = self.saes.info(path)
        return info.d_sae if info else None

    # ---- pages --------------------------------------------------------------------------
    def want(self, path: str, feature: int, remember: bool = True) -> FeaturePage | None:
        """The user wants this page: it is returned if cached (draw it now); else it is
        fetched and arrives as `PageArrived` (or `PageFailed`). A feature out of range
        is refused with a status message, and nothing changes."""
        d_sae = self.d_sae(path)
        if d_sae is not None and (problem := out_of_range(feature, d_sae)):
            self.post(InspectorStatus(problem, error=True))
            return None
        if remember and self.current is not None and self.current != (path, feature):
            self.history = (self.history + [self.current])[-HISTORY:]
        self.current = (path, feature)
        if (page := self.pages.cached(path, feature)) is not None:
            self.shown_page(path, page)
            return page
        self.post(InspectorStatus(f"loading #{feature}…" if self.saes.info(path) else f"opening {short_name(path)}…"))
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.ensure_future(self._load(path, feature))
        return None

    async def _load(self, path: str, feature: int) -> None:
        try:
            if self.saes.info(path) is None:
                info = await self.saes.open(path, on_progress=lambda f: self.post(
                    InspectorStatus(f"indexing {short_name(path)}: {f:.0%}")))
                self.post(SaeOpenedNow(path, info))
                if problem := out_of_range(feature, info.d_sae):
                    raise EngineError(problem)
            page = await self.pages.get(path, feature)
        except EngineError as e:
            if self.current == (path, feature):  # back to the page shown, as if never asked
                self.current = self.shown
                if self.history and self.history[-1] == self.shown:
                    self.history.pop()
                self.post(PageFailed(path, feature, str(e), self.shown[0] if self.shown else None))
            return
        if self.current == (path, feature):  # else the user has moved on; the page waits in the cache
            self.post(PageArrived(path, feature, page))

    def shown_page(self, path: str, page: FeaturePage) -> None:
        """The pane drew this page: prefetch what is likely next."""
        self.shown = (path, page.feature)
        neighbours = [n.feature for n in page.neighbours]
        self.pages.prefetch(path, prefetch_order(page.feature, page.d_sae, neighbours))

    def back(self) -> Key | None:
        """The feature shown before the current one (`b`), if any."""
        return self.history.pop() if self.history else None

    # ---- search, live -------------------------------------------------------------------------
    async def search(self, path: str, kind: str, query: str) -> list[SearchHit]:
        await self.saes.open(path)
        result = await self.link.run("feature.search", {"path": path, "kind": kind, "query": query},
                                     needs_model=True)
        return result.results

    async def live(self, path: str, text: str) -> LiveActs:
        await self.saes.open(path)
        return await self.link.run("feature.live", {"path": path, "text": text}, needs_model=True)
