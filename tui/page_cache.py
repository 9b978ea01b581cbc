"""Feature pages kept on the app's side, so moving between features does not wait
on the engine once a page has been fetched, and pages likely to be wanted next
are fetched in the background.

`PageCache(fetch)` wraps an async `fetch(path, feature, background) -> page`. `cached()` answers
at once from memory; `get()` fetches (sharing a fetch already in flight for the
same page); `prefetch()` queues pages to fetch one at a time in the background.

Notes
- No Textual here: the cache is plain asyncio, so it can be tested on its own.
- Prefetching is one request at a time and the queue is replaced by each call:
  the engine (often a busy CPU) should spend its time on what the user looks at
  now, and a page asked for with `get()` never waits behind the queue.
- A fetch is shared by everyone asking for the same page and cancelled (in the
  engine too) only when the last of them gives up, so holding → through pages
  that are not cached does not leave a queue of unwanted requests behind.
- A failed prefetch is forgotten silently; the same page asked for with `get()`
  reports its error.
- `fetched` lists the pages actually asked of the engine, which is how tests see
  that a page came from the cache.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Awaitable, Callable, Iterable

from engine.protocol import FeaturePage

Key = tuple[str, int]
Fetch = Callable[[str, int, bool], Awaitable[FeaturePage]]  # (path, feature, background) -> page


class PageCache:
    def __init__(self, fetch: Fetch, capacity: int = 512):
        self._fetch, self.capacity = fetch, capacity
        self._pages: collections.OrderedDict[Key, FeaturePage] = collections.OrderedDict()
        self._inflight: dict[Key, asyncio.Future] = {}
        self._waiters: collections.Counter[Key] = collections.Counter()
        self._queue: collections.deque[Key] = collections.deque()
        self._runner: asyncio.Task | None = None
        self.fetched: list[Key] = []  # every page asked of the engine, in order

    def cached(self, path: str, feature: int) -> FeaturePage | None:
        page = self._pages.get((path, feature))
        if page is not None:
            self._pages.move_to_end((path, feature))
        return page

    async def get(self, path: str, feature: int, background: bool = False) -> FeaturePage:
        """The page, from memory or the engine; raises what `fetch` raises. `background`
        is passed to `fetch` when this call starts the request (a prefetch)."""
        key = (path, feature)
        if (page := self.cached(*key)) is not None:
            return page
        future = self._inflight.get(key)
        if future is None:
            future = self._inflight[key] = asyncio.ensure_future(self._fetch_one(key, background))
        self._waiters[key] += 1
        try:
            return await asyncio.shield(future)  # one caller giving up does not cancel a shared fetch...
        except asyncio.CancelledError:
            if self._waiters[key] == 1:  # ...but the last one does: nobody wants the page any more
                future.cancel()
            raise
        finally:
            self._waiters[key] -= 1
            if not self._waiters[key]:
                del self._waiters[key]

    async def _fetch_one(self, key: Key, background: bool) -> FeaturePage:
        self.fetched.append(key)
        try:
            page = await self._fetch(*key, background)
        finally:
            self._inflight.pop(key, None)
        self._pages[key] = page
        while len(self._pages) > self.capacity:
            self._pages.popitem(last=False)
        return page

    def prefetch(self, path: str, features: Iterable[int]) -> None:
        """Fetch these pages in the background, in order, replacing any earlier queue."""
        self._queue = collections.deque(
            (path, f) for f in dict.fromkeys(features) if (path, f) not in self._pages)
        if self._queue and (self._runner is None or self._runner.done()):
            self._runner = asyncio.ensure_future(self._drain())

    @property
    def prefetching(self) -> bool:
        return self._runner is not None and not self._runner.done()

    async def _drain(self) -> None:
        while self._queue:
            key = self._queue.popleft()
            if key in self._pages:
                continue
            with contextlib.suppress(Exception):  # noqa: BLE001 - see the notes
                await self.get(*key, background=True)

    def clear(self) -> None:
        self._pages.clear()
        self._queue.clear()

    def close(self) -> None:
        """Stop prefetching (the app is closing): the queue is dropped; a fetch under
        way ends with the connection, like any other request."""
        self._queue.clear()
