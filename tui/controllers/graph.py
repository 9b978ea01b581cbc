"""The Graph pane's controller: its engine requests (`graph.stats`, `graph.node`,
`graph.compare`) and what it keeps of their answers, as plain asyncio. It posts
typed messages; the pane (`tui/widgets/graph_pane.py`) draws them.

Notes
- Replies are cached per engine (keyed by its pid, as `SaeSession` does): a
  neighbour opened twice in the tree, or a feature loaded again, asks nothing;
  a restarted engine is asked afresh.
- A load asks `graph.stats` first (once per SAE) and then `graph.node`, one after
  the other: the engine builds an SAE's graph on the first request, and two at
  once would build it twice.
- A newer load or comparison replaces an older one (exclusive task groups); the
  neighbours of tree rows are independent requests, each answered by its own
  `GraphNodeArrived`, so opening several rows quickly fills all of them.
- Loads and comparisons are jobs that may rebuild an SAE's index (one without
  co-occurrence) with progress; those events become `GraphStatus` lines, and
  `cancel` asks the engine to stop the graph jobs under way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from textual.message import Message

from engine.protocol import GraphComparison, GraphNode, GraphStats
from tui.client import EngineError, JobCancelled
from tui.controllers.requests import RequestTasks
from tui.link import EngineLink
from tui.sae_paths import short_name

GRAPH_METHODS = ("graph.stats", "graph.node", "graph.compare")
NEIGHBOURS = 12  # neighbours listed per feature (the engine's default)
MATCHES = 10  # matches listed for the compared feature


@dataclass
class GraphStatus(Message):
    """A line for the pane's info row: progress, a note, or an error (shown in full)."""

    text: str
    error: bool = False


@dataclass
class GraphStatsShown(Message):
    path: str
    stats: GraphStats


@dataclass
class GraphRootShown(Message):
    """The feature asked for, with its neighbours: the tree starts again from it."""

    path: str
    node: GraphNode


@dataclass
class GraphNodeArrived(Message):
    """A tree row's neighbours (`node` None: the request failed, the status says why)."""

    path: str
    feature: int
    node: GraphNode | None


@dataclass
class GraphCompared(Message):
    comparison: GraphComparison
    path: str
    other: str


def progress_line(what: str, event) -> str | None:
    """`what: 40% · building the index` for a progress event; None for other events."""
    if event.kind != "progress":
        return None
    p = event.data
    parts = [f"{p.fraction:.0%}" if p.fraction is not None else "", p.message or ""]
    return f"{what}: " + " · ".join(x for x in parts if x)


class GraphController:
    def __init__(self, link: EngineLink, post) -> None:
        self.link, self.post = link, post
        self.requests = RequestTasks("graph", link.log, lambda text: post(GraphStatus(text, error=True)))
        self._stats: dict[tuple, GraphStats] = {}
        self._nodes: dict[tuple, GraphNode] = {}
        self.generation = 0  # of loads: a late answer to an older one is dropped
        self._load_task: asyncio.Task | None = None
        self._compare_task: asyncio.Task | None = None

    # ---- tasks --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.requests.running)

    async def idle(self) -> None:
        """Wait for every request under way (tests)."""
        await self.requests.idle()

    def close(self) -> None:
        self.requests.close()

    # ---- cached requests ---------------------------------------------------------------------
    def stats_of(self, path: str) -> GraphStats | None:
        return self._stats.get((self.link.engine_pid, path))

    def node_of(self, path: str, feature: int) -> GraphNode | None:
        return self._nodes.get((self.link.engine_pid, path, feature))

    async def _stats_now(self, path: str) -> GraphStats:
        if (stats := self.stats_of(path)) is not None:
            return stats
        what = f"the graph of {short_name(path)}"

        def on_event(event) -> None:
            if (line := progress_line(what, event)) is not None:
                self.post(GraphStatus(line))

        stats = await self.link.run("graph.stats", {"path": path}, needs_model=True, on_event=on_event)
        self.remember(path, stats)
        return stats

    async def _node_now(self, path: str, feature: int) -> GraphNode:
        if (node := self.node_of(path, feature)) is not None:
            return node
        node = await self.link.run("graph.node", {"path": path, "feature": feature, "n": NEIGHBOURS},
                                   needs_model=True)
        self.remember(path, node)
        return node

    def remember(self, path: str, reply: GraphStats | GraphNode) -> None:
        """Keep a reply for this engine (the snapshot test gives its made-up ones here)."""
        if isinstance(reply, GraphStats):
            self._stats[(self.link.engine_pid, path)] = reply
        else:
            self._nodes[(self.link.engine_pid, path, reply.feature)] = reply

    def forget(self) -> None:
        """Another SAE was picked: a comparison under way is of the old pair, and is dropped."""
        if self._compare_task is not None and not self._compare_task.done():
            self._compare_task.cancel()

    # ---- loading a feature ----------------------------------------------------------------
    def load(self, path: str, feature: int) -> asyncio.Task:
        """The SAE's graph statistics (once) and the feature's neighbourhood: posts
        `GraphStatsShown` then `GraphRootShown`, or an error `GraphStatus`."""
        self.generation += 1
        self.post(GraphStatus(f"loading #{feature} of {short_name(path)}…"))
        self._load_task = self.requests.spawn("load", self._load(self.generation, path, feature))
        return self._load_task

    async def _load(self, generation: int, path: str, feature: int) -> None:
        try:
            stats = await self._stats_now(path)
            if generation == self.generation:
                self.post(GraphStatsShown(path, stats))
            node = await self._node_now(path, feature)
        except JobCancelled:
            if generation == self.generation:
                self.post(GraphStatus("The load was cancelled."))
            return
        except EngineError as e:
            if generation == self.generation:
                self.post(GraphStatus(str(e), error=True))
            return
        if generation == self.generation:
            self.post(GraphRootShown(path, node))
            self.post(GraphStatus(self._loaded_note(node)))

    @staticmethod
    def _loaded_note(node: GraphNode) -> str:
        if not node.in_graph:
            return f"#{node.feature} never fired in the index: it is not in the graph"
        if not node.neighbours:
            return f"#{node.feature} fired on {node.fires} tokens but has no edge under the rule"
        return f"#{node.feature}: degree {node.degree} · strength {node.strength:.3g} · " \
               f"clustering {node.clustering:.3f} · fires on {node.fires} tokens"

    # ---- a tree row's neighbours --------------------------------------------------------------
    def expand(self, path: str, feature: int) -> GraphNode | None:
        """The neighbours of a tree row: returned at once if cached, else asked for and
        posted as `GraphNodeArrived` (its `node` None when the request failed)."""
        if (node := self.node_of(path, feature)) is not None:
            return node
        self.requests.spawn("node", self._expand(path, feature), exclusive=False)
        return None

    async def _expand(self, path: str, feature: int) -> None:
        try:
            node = await self._node_now(path, feature)
        except EngineError as e:
            self.post(GraphStatus(str(e), error=True))
            self.post(GraphNodeArrived(path, feature, None))
            return
        self.post(GraphNodeArrived(path, feature, node))

    # ---- comparing two SAEs --------------------------------------------------------------------
    def compare(self, path: str, other: str, feature: int | None) -> asyncio.Task:
        """`path`'s graph against `other`'s, with `feature`'s matches: posts `GraphCompared`."""
        self.post(GraphStatus(f"comparing {short_name(path)} with {short_name(other)}…"))
        self._compare_task = self.requests.spawn("compare", self._compare(path, other, feature))
        return self._compare_task

    async def _compare(self, path: str, other: str, feature: int | None) -> None:
        what = f"comparing with {short_name(other)}"

        def on_event(event) -> None:
            if (line := progress_line(what, event)) is not None:
                self.post(GraphStatus(line))

        params = {"path": path, "other": other, "feature": feature, "n": MATCHES}
        try:
            result = await self.link.run("graph.compare", params, needs_model=True, on_event=on_event)
        except JobCancelled:
            self.post(GraphStatus("The comparison was cancelled."))
            return
        except EngineError as e:
            self.post(GraphStatus(str(e), error=True))
            return
        self.post(GraphCompared(result, path, other))
        self.post(GraphStatus(f"compared with {short_name(other)}: {result.matching_note}"))

    # ---- cancelling ------------------------------------------------------------------------------
    def cancel(self) -> bool:
        """Stop the graph requests under way; False when there are none."""
        if not self.busy:
            return False
        self.post(GraphStatus("cancelling…"))
        self.requests.spawn("cancel", self._cancel())
        return True

    async def _cancel(self) -> None:
        n = 0
        try:
            for method in GRAPH_METHODS:
                n += await self.link.cancel_jobs(method)
        except EngineError as e:
            self.post(GraphStatus(str(e), error=True))
            return
        if not n:  # nothing in the engine yet (waiting for the model): stop the tasks here
            for task in (self._load_task, self._compare_task):
                if task is not None and not task.done():
                    task.cancel()
            self.post(GraphStatus("Cancelled."))
