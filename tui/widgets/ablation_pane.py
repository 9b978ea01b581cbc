"""The Ablation pane: which features drive a prediction, and what a feature drives.

Type a prompt and press Enter: the root is the model's prediction at the chosen
position (the last token, or one picked on the token chips with ←/→ and Enter),
and its children are the downstream SAE's features and error term with the
largest effect on it. Expanding a node asks the engine for its own children.
Keys on the tree: `a` toggles ablation of the selected feature and shows what
the ablated set drives (the down tree), `d` switches between the up and down
trees, `x` switches exact/attribution, `z` zero/mean ablation, `c` checks the
node's attributions against exact ablation, `o` opens the feature in the
Inspector, `e` exports the tree as JSON.

Notes
- The pane keeps the engine's nodes (`up`, `down`) and fills in `children`
  as replies arrive, so the export is exactly what was shown.
- A method or mode change recomputes: the root's children again, then every node
  that was open, found again by what it is (site, feature), not its index.
- Down-tree nodes are expanded with `tree.ablate` of that one feature: the engine
  keeps only the up tree under the tree's name, and the children of a down node
  are by definition what ablating it drives.
- A tree lives in the engine that built it: after an engine restart the next
  action rebuilds it (same prompt, position, open nodes) instead of failing.
- Every reply carries the tree's generation; one that arrives after the tree was
  rebuilt (new prompt, position, mode) is dropped.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Static, Tabs

from engine.protocol import TreeNode as Node
from tui.client import EngineError
from tui.link import EngineLink
from tui.navigation import OpenFeature
from tui.sae_paths import default_downstream, default_upstream, short_name
from tui.sae_session import SaeSession
from tui.text import visible_token
from tui.tree_state import TreeState, chain_of, export, find_chain, open_chains
from tui.widgets.ablation_tree import AblationTree, NodeRef
from tui.widgets.sae_field import SaeField
from tui.widgets.token_cursor import TokenCursor

TOP = 8
_tree_names = itertools.count(1)


class AblationPane(Vertical):
    BINDINGS = [
        Binding("a", "ablate", "Ablate", id="ablate.toggle",
                tooltip="Toggle ablation of the selected feature and show what the ablated set drives"),
        Binding("c", "check", "Check", id="ablate.check",
                tooltip="Check the node's attributions against exact ablation (n, Pearson, Spearman)"),
        Binding("o", "inspect", "Inspect", id="ablate.inspect", tooltip="Open the selected feature in the Inspector"),
        Binding("x", "switch_method", "Exact/≈", id="ablate.method", show=False,
                tooltip="Switch between exact effects and attribution, and recompute"),
        Binding("d", "switch_direction", "Up/down", id="ablate.direction", show=False,
                tooltip="Switch between what drives the prediction (up) and what the ablation drives (down)"),
        Binding("z", "switch_mode", "Zero/mean", id="ablate.mode", show=False,
                tooltip="Ablate to zero or to the feature's mean activation, and recompute"),
        Binding("e", "export", "Export", id="ablate.export", show=False,
                tooltip="Write the tree as JSON to the current directory"),
        Binding("left_square_bracket", "position(-1)", "Earlier", show=False,
                group=Binding.Group("Position: earlier / later token")),
        Binding("right_square_bracket", "position(1)", "Later", show=False,
                group=Binding.Group("Position: earlier / later token")),
        Binding("p", "focus_prompt", "Prompt", id="ablate.prompt", show=False, tooltip="Type another prompt"),
    ]
    DEFAULT_CSS = """
    AblationPane { height: 1fr; }
    AblationPane .row { height: 1; padding: 0 1; }
    AblationPane .row Label { width: auto; color: $text-muted; }
    AblationPane #ablate-info { height: 1; padding: 0 1; color: $text-muted; }
    AblationPane #ablate-info.-error { color: $text-error; }
    """

    @dataclass
    class Opened(Message):
        state: TreeState

    @dataclass
    class Changed(Message):
        """The current tree's nodes changed (generation `generation`); redraw it."""

        generation: int
        note: str = ""

    @dataclass
    class Expanded(Message):
        generation: int
        ref: NodeRef
        down: bool

    @dataclass
    class Failed(Message):
        generation: int
        error: str

    def __init__(self, link: EngineLink, saes: SaeSession, **kwargs) -> None:
        super().__init__(**kwargs)
        self.link, self.saes = link, saes
        self.state: TreeState | None = None
        self.direction = "up"
        self.method, self.mode = "attribution", "zero"
        self._generation = 0
        self.last_export: Path | None = None
        self._cursor: dict[str, tuple] = {}  # direction -> path of the node under the cursor

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("prompt ")
            yield Input(placeholder="Type a prompt; Enter builds the tree of its prediction",
                        id="ablate-prompt", compact=True)
        with Horizontal(classes="row"):
            yield Label("SAEs ")
            yield SaeField(default_upstream(), "Upstream SAE (the earlier site)", id="ablate-up")
            yield Label(" → ")
            yield SaeField(default_downstream(), "Downstream SAE (the later site)", id="ablate-down")
        yield TokenCursor(hint="(the prompt's tokens: ←/→ pick the position, Enter rebuilds)", id="ablate-tokens")
        yield Static("", id="ablate-info")
        yield AblationTree(id="ablate-tree")

    def on_mount(self) -> None:
        self.tree.is_ablated = self._is_ablated
        self._info(self._settings())

    def on_show(self) -> None:
        if not isinstance(self.app.focused, Tabs):  # someone walking the tabs with ←/→ stays there
            self.focus_content()

    def focus_content(self) -> None:
        (self.prompt_input if self.state is None else self.tree).focus()

    # ---- parts ------------------------------------------------------------------------
    @property
    def tree(self) -> AblationTree:
        return self.query_one(AblationTree)

    @property
    def prompt_input(self) -> Input:
        return self.query_one("#ablate-prompt", Input)

    @property
    def sae_paths(self) -> list[str]:
        return [self.query_one("#ablate-up", SaeField).path, self.query_one("#ablate-down", SaeField).path]

    def _is_ablated(self, node: Node) -> bool:
        s = self.state
        n = node.node
        return bool(s and s.ablated and s.ablated[0] == n.site_index and n.feature in s.ablated[1])

    # ---- opening ----------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.open_tree()

    def on_sae_field_changed(self, message: SaeField.Changed) -> None:
        message.stop()
        if self.state is not None:
            self.open_tree()

    def open_tree(self, position: int | None = None, keep: list[tuple] | None = None) -> None:
        """Build the tree for the prompt at `position` (None: the last token)."""
        prompt = self.prompt_input.value
        if not prompt.strip():
            self._info("Type a prompt first.", error=True)
            self.prompt_input.focus()
            return
        self._generation += 1
        self._info("opening the SAEs…" if not all(self.saes.info(p) for p in self.sae_paths) else "building the tree…")
        self.run_worker(self._open(self._generation, prompt, position, self.sae_paths, keep or []),
                        group="tree", exclusive=True, exit_on_error=False)

    async def _open(self, generation: int, prompt: str, position: int | None, paths: list[str],
                    keep: list[tuple]) -> None:
        try:
            for path in paths:
                await self.saes.open(path, on_progress=lambda f, p=path: self._info(f"indexing {short_name(p)}: {f:.0%}"))
            name = f"tui-{os.getpid()}-{next(_tree_names)}"
            params = {"tree": name, "upstream": paths[0], "downstream": paths[1], "prompt": prompt,
                      "position": position, "mode": self.mode, "method": self.method, "top": TOP}
            opened = await self.link.run("tree.open", params, needs_model=True)
            state = TreeState(name, prompt, paths, opened, self.method, self.mode, generation,
                              engine=self.link.engine_pid)
            await self._reexpand(state, keep)
        except EngineError as e:
            self.post_message(self.Failed(generation, str(e)))
        else:
            self.post_message(self.Opened(state))

    def on_ablation_pane_opened(self, message: Opened) -> None:
        if message.state.generation != self._generation:
            return
        old, s = self.state, message.state
        self.state = s
        self.query_one(TokenCursor).show(s.opened.tokens, s.opened.position)
        same = (old is not None and old.prompt == s.prompt and old.paths == s.paths
                and old.opened.position == s.opened.position)
        if same and old.ablated and old.mode == s.mode:
            s.ablated, s.down = old.ablated, old.down  # a method change leaves the (exact) down tree as it was
        elif same and old.ablated:
            self._run_ablation(*old.ablated)  # a new mode: ablate the same features again
        else:
            self.direction = "up"
            self._cursor = {}
        self._draw()
        if not self.tree.has_focus:
            self.tree.focus()

    def on_tree_node_highlighted(self, event: AblationTree.NodeHighlighted) -> None:
        event.stop()
        if event.node.data is not None and self.state is not None:
            self._cursor[self.direction] = event.node.data.path

    def on_ablation_pane_failed(self, message: Failed) -> None:
        if message.generation == self._generation:
            self._info(message.error, error=True)

    # ---- expanding ----------------------------------------------------------------------
    def _lost(self, also_open: tuple | None = None) -> bool:
        """True (and the tree is rebuilt, with `also_open` opened too) when the engine
        holding the tree has restarted."""
        if self.state is None or self.state.engine == self.link.engine_pid or not self.link.connected:
            return False
        self.app.notify("The engine restarted: rebuilding the tree.", timeout=4)
        self._recompute([also_open] if also_open else [])
        return True

    def on_ablation_tree_expand_wanted(self, message: AblationTree.ExpandWanted) -> None:
        message.stop()
        if self.state is None:
            return
        if self._lost(chain_of(self.state.up, message.ref.path) if self.direction == "up" else None):
            return
        down = self.direction == "down"
        self.run_worker(self._expand(self.state, message.ref, down), group="expand", exit_on_error=False)

    async def _expand(self, s: TreeState, ref: NodeRef, down: bool) -> None:
        node = ref.node
        try:
            if down:
                n = node.node
                if n.kind != "feature":
                    node.children = []
                else:
                    result = await self.link.run("tree.ablate", {"tree": s.name, "site": n.site_index,
                                                                 "features": [n.feature], "mode": s.mode},
                                                 needs_model=True)
                    node.children = result.root.children
            else:
                result = await self.link.run("tree.expand", {"tree": s.name, "path": list(ref.path),
                                                             "method": s.method}, needs_model=True)
                node.children = result.children
        except EngineError as e:
            self.post_message(self.Failed(s.generation, str(e)))
            return
        self.post_message(self.Expanded(s.generation, ref, down))

    def on_ablation_pane_expanded(self, message: Expanded) -> None:
        if self.state is None or message.generation != self.state.generation:
            return
        if message.down == (self.direction == "down"):
            self.tree.set_children(message.ref.path, message.ref.node)

    async def _reexpand(self, s: TreeState, keep: list[tuple]) -> None:
        """Open again the nodes that were open (found by what they are), with the state's method."""
        for chain in keep:
            found = find_chain(s.up, chain)
            if found is not None and found[1].children is None:
                path, node = found
                result = await self.link.run("tree.expand", {"tree": s.name, "path": path, "method": s.method},
                                             needs_model=True)
                node.children = result.children

    # ---- actions ------------------------------------------------------------------------
    def _selected_feature(self) -> Node | None:
        ref = self.tree.selected
        if ref is None or ref.node.node.kind != "feature":
            self.app.notify("Select a feature node first.", severity="warning", timeout=3)
            return None
        return ref.node

    def action_ablate(self) -> None:
        if self.state is None or self._lost() or (node := self._selected_feature()) is None:
            return
        n = node.node
        site, feature = n.site_index, n.feature
        s = self.state
        current = set(s.ablated[1]) if s.ablated and s.ablated[0] == site else set()
        features = tuple(sorted(current ^ {feature}))
        if not features:
            s.ablated, s.down = None, None
            self.direction = "up"
            self._draw()
            return
        self._run_ablation(site, features)

    def _run_ablation(self, site: int, features: tuple[int, ...]) -> None:
        s = self.state
        s.ablated = (site, tuple(features))
        self.tree.relabel()
        self._info(f"ablating {len(features)} feature{'s' if len(features) > 1 else ''}…")
        self.run_worker(self._ablate(s, site, tuple(features)), group="ablate", exclusive=True, exit_on_error=False)

    async def _ablate(self, s: TreeState, site: int, features: tuple[int, ...]) -> None:
        try:
            result = await self.link.run("tree.ablate", {"tree": s.name, "site": site, "features": list(features),
                                                         "mode": s.mode}, needs_model=True)
        except EngineError as e:
            self.post_message(self.Failed(s.generation, str(e)))
            return
        if s.ablated == (site, features):
            s.down = result.root
            self.direction = "down"
            self._cursor.pop("down", None)
            self.post_message(self.Changed(s.generation))

    def on_ablation_pane_changed(self, message: Changed) -> None:
        if self.state is not None and message.generation == self.state.generation:
            self._draw()
            if message.note:
                self.app.notify(message.note, timeout=6)

    def action_switch_direction(self) -> None:
        if self.state is None:
            return
        if self.state.down is None:
            if self._selected_feature() is not None:
                self.action_ablate()
            return
        self.direction = "up" if self.direction == "down" else "down"
        self._draw()

    def action_switch_method(self) -> None:
        self.method = "exact" if self.method == "attribution" else "attribution"
        self._recompute()

    def action_switch_mode(self) -> None:
        self.mode = "mean" if self.mode == "zero" else "zero"
        self._recompute()

    def _recompute(self, also_open: list[tuple] = ()) -> None:
        if self.state is None:
            self._info(self._settings())
            return
        keep = open_chains(self.state.up) + list(also_open)
        self.open_tree(self.state.opened.position, keep)

    def action_position(self, step: int) -> None:
        if self.state is None:
            return
        tokens = self.state.opened.tokens
        position = max(0, min(len(tokens) - 1, self.state.opened.position + step))
        if position != self.state.opened.position:
            self.query_one(TokenCursor).show(tokens, position)
            self.open_tree(position)

    def on_token_cursor_chosen(self, message: TokenCursor.Chosen) -> None:
        message.stop()
        if self.state is not None and message.index != self.state.opened.position:
            self.open_tree(message.index)

    def on_token_cursor_moved(self, message: TokenCursor.Moved) -> None:
        message.stop()
        if self.state is not None and message.index != self.state.opened.position:
            token = visible_token(self.state.opened.tokens[message.index])
            self._info(f"position {message.index} ({token}): Enter rebuilds the tree there")

    def action_check(self) -> None:
        s = self.state
        ref = self.tree.selected
        if s is None or ref is None or self._lost():
            return
        if self.direction == "down":
            self.app.notify("Down-tree effects are exact already; check the up tree (d switches).", timeout=4)
            return
        self._info("checking attribution against exact ablation…")
        self.run_worker(self._check(s, ref), group="check", exclusive=True, exit_on_error=False)

    async def _check(self, s: TreeState, ref: NodeRef) -> None:
        try:
            result = await self.link.run("tree.check", {"tree": s.name, "path": list(ref.path)}, needs_model=True)
        except EngineError as e:
            self.post_message(self.Failed(s.generation, str(e)))
            return
        s.checks[ref.path] = result
        note = (f"{result.n} candidates: Pearson {result.pearson:.3f}, Spearman {result.spearman:.3f} "
                f"between attribution and exact ablation")
        self.post_message(self.Changed(s.generation, note))

    def action_inspect(self) -> None:
        if self.state is None or (node := self._selected_feature()) is None:
            return
        n = node.node
        self.post_message(OpenFeature(self.state.paths[n.site_index], n.feature))

    def action_export(self) -> None:
        s = self.state
        if s is None:
            return
        path = Path.cwd() / f"saescope-tree-{time.strftime('%Y%m%d-%H%M%S')}.json"
        try:
            path.write_text(json.dumps(export(s), indent=1) + "\n")
        except OSError as e:
            self.app.notify(f"Could not write {path}: {e.strerror or e}", severity="error")
            return
        self.last_export = path
        self.app.notify(f"Tree written to {path}", title="Export", timeout=8)

    def action_focus_prompt(self) -> None:
        self.prompt_input.focus()

    # ---- drawing ------------------------------------------------------------------------
    def _draw(self) -> None:
        s = self.state
        tree = self.tree
        tree.exact = {p: {pair.feature: pair.exact for pair in c.pairs} for p, c in s.checks.items()}
        tree.agreement = s.checks if self.direction == "up" else {}
        if self.direction == "down" and s.down is not None:
            tree.exact = {}
            tree.show(s.down, cursor=self._cursor.get("down", ()))
        else:
            self.direction = "up"
            o = s.opened
            title = Text.assemble(("predicts ", "dim"), (visible_token(o.predicted), "bold"),
                                  (f" after {visible_token(o.tokens[o.position])} (@{o.position})", "dim"),
                                  f"  logit = {s.up.effect:.3f}")
            tree.show(s.up, title, cursor=self._cursor.get("up", ()))
        self._info(self._settings())

    def _settings(self) -> str:
        parts = []
        if self.state is not None:
            o = self.state.opened
            parts.append(f"@{o.position} {visible_token(o.tokens[o.position])} → "
                         f"{visible_token(o.predicted)}")
        parts.append("≈ attribution" if self.method == "attribution" else "= exact")
        parts.append(f"{self.mode} ablation")
        if self.state is not None:
            parts.append("↓ what it drives" if self.direction == "down" else "↑ what drives it")
        return " · ".join(parts)

    def _info(self, text: str, error: bool = False) -> None:
        info = self.query_one("#ablate-info", Static)
        info.update(Text(text, no_wrap=True, overflow="ellipsis"))
        info.set_class(error, "-error")
