"""The Ablation pane's controller: its engine requests (`tree.open`, `tree.expand`,
`tree.ablate`, `tree.check`) and what it knows (the open tree, the ablated
features, the method and mode), as plain asyncio. It posts typed messages; the
pane (`tui/widgets/ablation_pane.py`) draws them.

Notes
- Every request runs as a task in a group; a new request in an exclusive group
  (opening, ablating, checking) cancels the previous one, as a newer key press
  replaces an older one.
- Every reply carries the tree's generation; one that arrives after the tree was
  rebuilt (new prompt, position, mode) is dropped.
- A method or mode change recomputes: the root's children again, then every node
  that was open, found again by what it is (site, feature), not its index.
- The ablated features survive a rebuild on the same SAEs (another position,
  method, mode or prompt): they are ablated again in the new tree, never dropped
  silently. Other SAEs drop them, and say so.
- Down-tree nodes are expanded with `tree.ablate` of that one feature: the engine
  keeps only the up tree under the tree's name, and the children of a down node
  are by definition what ablating it drives.
- A tree lives in the engine that built it: after an engine restart the next
  action rebuilds it (same prompt, position, open nodes) instead of failing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from engine.protocol import PredictionChange
from engine.protocol import TreeNode as Node
from tui.client import EngineError
from tui.controllers.requests import RequestTasks
from tui.link import EngineLink
from tui.sae_paths import short_name
from tui.sae_session import SaeSession
from tui.text import visible_token
from tui.tree_state import NodePath, TreeState, chain_of, export, find_chain, open_chains

TOP = 8
_tree_names = itertools.count(1)


@dataclass
class TreeShown(Message):
    """The tree, the ablations or the checks changed: redraw; `note` to show."""

    note: str = ""


@dataclass
class ChildrenArrived(Message):
    """The children of the node at `path` arrived (in the up or the down tree)."""

    path: NodePath
    node: Node
    down: bool


@dataclass
class Status(Message):
    """A line for the pane's info row: what is under way, or an error (shown in full)."""

    text: str
    error: bool = False


@dataclass
class TreeFailed(Message):
    """Opening a tree failed: the SAE fields go back to the SAEs of the tree shown."""

    error: str
    paths: list[str] | None


class AblationController:
    def __init__(self, link: EngineLink, saes: SaeSession, post) -> None:
        self.link, self.saes, self.post = link, saes, post
        self.state: TreeState | None = None
        self.direction = "up"
        self.method, self.mode = "attribution", "zero"
        self.prediction: PredictionChange | None = None  # before/after the current ablations
        self.generation = 0
        self._cursor: dict[str, NodePath] = {}  # direction -> path of the node under the cursor
        self.requests = RequestTasks("ablation", link.log, lambda text: post(Status(text, error=True)))

    # ---- tasks --------------------------------------------------------------------------
    def _spawn(self, group: str, coro, exclusive: bool = True) -> asyncio.Task:
        return self.requests.spawn(group, coro, exclusive)

    async def idle(self) -> None:
        """Wait for every request under way (tests)."""
        await self.requests.idle()

    def close(self) -> None:
        self.requests.close()

    # ---- what the pane shows ---------------------------------------------------------------
    def is_ablated(self, node: Node) -> bool:
        s, n = self.state, node.node
        return bool(s and s.ablated and s.ablated[0] == n.site_index and n.feature in s.ablated[1])

    def remember_cursor(self, path: NodePath) -> None:
        """The node under the cursor in the tree shown (it is found again when that tree
        is drawn again)."""
        self._cursor[self.direction] = path

    @property
    def cursor(self) -> NodePath:
        """Where the cursor was in the tree shown (the root if nowhere)."""
        return self._cursor.get(self.direction, ())

    def settings(self) -> str:
        """`@7 ( → self · new rows ≈ attribution · zero ablation · ↑ what drives it`."""
        parts = []
        if self.state is not None:
            o = self.state.opened
            parts.append(f"@{o.position} {visible_token(o.tokens[o.position])} → {visible_token(o.predicted)}")
        parts.append("new rows ≈ attribution" if self.method == "attribution" else "new rows = exact")
        parts.append(f"{self.mode} ablation")
        if self.state is not None:
            parts.append("↓ what it drives" if self.direction == "down" else "↑ what drives it")
        return " · ".join(parts)

    # ---- opening --------------------------------------------------------------------------
    def open(self, prompt: str, paths: list[str], position: int | None = None,
             keep: list[tuple] | None = None) -> asyncio.Task | None:
        """Build the tree for the prompt at `position` (None: the last token)."""
        if not prompt.strip():
            self.post(Status("Type a prompt first.", error=True))
            return None
        self.generation += 1
        opening = not all(self.saes.info(p) for p in paths)
        self.post(Status("opening the SAEs…" if opening else "building the tree…"))
        return self._spawn("tree", self._open(self.generation, prompt, position, list(paths), keep or []))

    async def _open(self, generation: int, prompt: str, position: int | None, paths: list[str],
                    keep: list[tuple]) -> None:
        try:
            for path in paths:
                await self.saes.open(path, on_progress=lambda f, p=path: self.post(
                    Status(f"indexing {short_name(p)}: {f:.0%}")))
            name = f"tui-{os.getpid()}-{next(_tree_names)}"
            params = {"tree": name, "upstream": paths[0], "downstream": paths[1], "prompt": prompt,
                      "position": position, "mode": self.mode, "method": self.method, "top": TOP}
            opened = await self.link.run("tree.open", params, needs_model=True)
            state = TreeState(name, prompt, paths, opened, self.method, self.mode, generation,
                              engine=self.link.engine_pid)
            await self._reexpand(state, keep)
        except EngineError as e:
            if generation == self.generation:
                self.link.log(f"ablation: {e}")
                self.post(TreeFailed(str(e), self.state.paths if self.state else None))
            return
        if generation != self.generation:
            return
        old, self.state = self.state, state
        note = ""
        if old is not None and old.ablated:
            if old.paths == paths:
                await self._ablate(state, *old.ablated)  # the same features, in the new tree
            else:
                note = "The ablations were dropped: other SAEs."
        if state.ablated is None:
            self.direction, self.prediction = "up", None
        if old is None or (old.prompt, old.opened.position) != (prompt, state.opened.position):
            self._cursor = {}
        self.post(TreeShown(note))

    async def _reexpand(self, s: TreeState, keep: list[tuple]) -> None:
        """Open again the nodes that were open (found by what they are), with the state's method."""
        for chain in keep:
            found = find_chain(s.up, chain)
            if found is not None and found[1].children is None:
                path, node = found
                result = await self.link.run("tree.expand", {"tree": s.name, "path": path, "method": s.method},
                                             needs_model=True)
                node.children = result.children

    def lost(self, also_open: tuple | None = None) -> bool:
        """True (and the tree is rebuilt, with `also_open` opened too) when the engine
        holding the tree has restarted."""
        if self.state is None or self.state.engine == self.link.engine_pid or not self.link.connected:
            return False
        self.post(TreeShown("The engine restarted: rebuilding the tree."))
        self.recompute([also_open] if also_open else [])
        return True

    def recompute(self, also_open: list[tuple] = (), position: int | None = None) -> None:
        """The same tree again (another method, mode or position), its open nodes reopened."""
        s = self.state
        if s is None:
            return
        keep = open_chains(s.up) + list(also_open)
        self.open(s.prompt, s.paths, s.opened.position if position is None else position, keep)

    def step_position(self, step: int) -> int | None:
        """The tree one token earlier or later (the ablations kept): its position, or None
        at either end."""
        if self.state is None:
            return None
        o = self.state.opened
        position = max(0, min(len(o.tokens) - 1, o.position + step))
        if position == o.position:
            return None
        self.recompute(position=position)
        return position

    def switch_method(self) -> None:
        self.method = "exact" if self.method == "attribution" else "attribution"
        self.recompute()

    def switch_mode(self) -> None:
        self.mode = "mean" if self.mode == "zero" else "zero"
        self.recompute()

    # ---- expanding ------------------------------------------------------------------------
    def expand(self, path: NodePath, node: Node) -> None:
        s = self.state
        if s is None or self.lost(chain_of(s.up, path) if self.direction == "up" else None):
            return
        self._spawn("expand", self._expand(s, path, node, self.direction == "down"), exclusive=False)

    async def _expand(self, s: TreeState, path: NodePath, node: Node, down: bool) -> None:
        n = node.node
        try:
            if down and n.kind != "feature":
                node.children = []
            elif down:
                result = await self.link.run("tree.ablate", {"tree": s.name, "site": n.site_index,
                                                             "features": [n.feature], "mode": s.mode},
                                             needs_model=True)
                node.children = result.root.children
            else:
                result = await self.link.run("tree.expand", {"tree": s.name, "path": list(path),
                                                             "method": s.method}, needs_model=True)
                node.children = result.children
        except EngineError as e:
            if s is self.state:
                self.post(Status(str(e), error=True))
            return
        if s is self.state:
            self.post(ChildrenArrived(path, node, down))

    # ---- ablating -------------------------------------------------------------------------
    def toggle_ablation(self, node: Node) -> None:
        """Ablate the feature, or restore it if it is ablated (the same key does both).
        On the down tree's root (the ablated set), restore them all."""
        s = self.state
        if s is None or self.lost():
            return
        n = node.node
        if n.kind == "ablation":
            features: tuple[int, ...] = ()
        else:
            current = set(s.ablated[1]) if s.ablated and s.ablated[0] == n.site_index else set()
            features = tuple(sorted(current ^ {n.feature}))
        if not features:
            s.ablated, s.down, self.prediction, self.direction = None, None, None, "up"
            self.post(TreeShown("Ablations restored."))
            return
        s.ablated = (n.site_index, features)
        self.post(TreeShown())  # the ✗ marks at once
        self.post(Status(f"ablating {len(features)} feature{'s' if len(features) > 1 else ''}…"))
        self._spawn("ablate", self._ablate(s, n.site_index, features))

    async def _ablate(self, s: TreeState, site: int, features: tuple[int, ...]) -> None:
        s.ablated = (site, features)
        try:
            result = await self.link.run("tree.ablate", {"tree": s.name, "site": site, "features": list(features),
                                                         "mode": s.mode}, needs_model=True)
        except EngineError as e:
            if s is self.state and s.ablated == (site, features):
                # nothing stale on screen: no down tree or prediction of another set
                s.down, self.prediction, self.direction = None, None, "up"
                self.post(TreeShown())
                self.post(Status(str(e), error=True))
            return
        if s is self.state and s.ablated == (site, features):
            s.down, self.prediction = result.root, result.prediction
            self._cursor.pop("down", None)
            self.post(TreeShown())

    def switch_direction(self) -> bool:
        """Up tree <-> down tree; False when nothing is ablated (no down tree)."""
        if self.state is None or self.state.down is None:
            return False
        self.direction = "up" if self.direction == "down" else "down"
        return True

    # ---- checking, exporting ------------------------------------------------------------------
    def check(self, path: NodePath) -> None:
        s = self.state
        if s is None or self.lost():
            return
        self.post(Status("checking attribution against exact ablation…"))
        self._spawn("check", self._check(s, path))

    async def _check(self, s: TreeState, path: NodePath) -> None:
        try:
            result = await self.link.run("tree.check", {"tree": s.name, "path": list(path)}, needs_model=True)
        except EngineError as e:
            if s is self.state:
                self.post(Status(str(e), error=True))
            return
        s.checks[path] = result
        self.post(TreeShown(f"{result.n} candidates: Pearson {result.pearson:.3f}, Spearman {result.spearman:.3f} "
                            f"between attribution and exact ablation"))

    def export(self, folder: Path, stamp: str) -> Path:
        """Write the tree as JSON into `folder`; raises OSError."""
        path = folder / f"saescope-tree-{stamp}.json"
        path.write_text(json.dumps(export(self.state, self.prediction), indent=1) + "\n")
        return path
