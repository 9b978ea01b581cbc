"""The Ablation pane: which features drive a prediction, and what a feature drives.

Type a prompt and press Enter: the root is the model's prediction at the chosen
position (the last token, or one picked on the token chips), its children the
downstream SAE's features and error term with the largest effect on it; a node
expands into its own drivers. `a` ablates a feature or restores it and shows the
prediction before and after; `d` shows what the ablated set drives (the keys:
BINDINGS, also in the help screen).

This file lays out and draws; `tui/controllers/ablation.py` owns the requests and
the state, and posts the messages handled here. Each row's number is the change of
its parent's value when the node is ablated, marked `=` exact or `≈` attribution.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static, Tabs

from tui.controllers.ablation import AblationController, ChildrenArrived, Status, TreeFailed, TreeShown
from tui.link import EngineLink
from tui.navigation import OpenFeature
from tui.sae_paths import default_downstream, default_upstream
from tui.sae_session import SaeSession
from tui.text import visible_token
from tui.widgets.ablation_tree import AblationTree
from tui.widgets.prediction_change import PredictionChangeView
from tui.widgets.sae_field import SaeField
from tui.widgets.token_cursor import TokenCursor

LEGEND = "each row: change of its parent if ablated · = exact · ≈ attribution"


class AblationPane(Vertical):
    BINDINGS = [
        Binding("a", "ablate", "Ablate", id="ablate.toggle",
                tooltip="Toggle ablation of the selected feature (the same key restores it)"),
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
                group=Binding.Group("Position: earlier / later token (ablations kept)")),
        Binding("right_square_bracket", "position(1)", "Later", show=False,
                group=Binding.Group("Position: earlier / later token (ablations kept)")),
        Binding("p", "focus_prompt", "Prompt", id="ablate.prompt", show=False, tooltip="Type another prompt"),
    ]
    DEFAULT_CSS = """
    AblationPane { height: 1fr; }
    AblationPane .row { height: 1; padding: 0 1; }
    AblationPane .row Label { width: auto; color: $text-muted; }
    AblationPane #ablate-info { height: auto; max-height: 6; padding: 0 1; color: $text-muted; }
    AblationPane #ablate-info.-error { color: $text-error; }
    """

    def __init__(self, link: EngineLink, saes: SaeSession, **kwargs) -> None:
        super().__init__(**kwargs)
        self.control = AblationController(link, saes, self.post_message)
        self.last_export: Path | None = None

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
        yield PredictionChangeView(id="ablate-prediction")
        yield AblationTree(id="ablate-tree")

    def on_mount(self) -> None:
        self.tree.is_ablated = self.control.is_ablated
        self._info(self._settings())

    def on_unmount(self) -> None:
        self.control.close()

    def on_show(self) -> None:
        if not isinstance(self.app.focused, Tabs):  # someone walking the tabs with ←/→ stays there
            self.focus_content()

    def focus_content(self) -> None:
        (self.prompt_input if self.state is None else self.tree).focus()

    # ---- parts ------------------------------------------------------------------------
    @property
    def state(self):
        return self.control.state

    @property
    def direction(self) -> str:
        return self.control.direction

    @property
    def tree(self) -> AblationTree:
        return self.query_one(AblationTree)

    @property
    def prompt_input(self) -> Input:
        return self.query_one("#ablate-prompt", Input)

    @property
    def sae_paths(self) -> list[str]:
        return [field.path for field in self.query(SaeField)]  # upstream, downstream

    # ---- opening ----------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.open_tree()

    def on_sae_field_changed(self, message: SaeField.Changed) -> None:
        message.stop()
        if self.state is not None:
            self.open_tree()

    def open_tree(self, position: int | None = None) -> None:
        """Build the tree for the prompt at `position` (None: the last token)."""
        if self.control.open(self.prompt_input.value, self.sae_paths, position) is None:
            self.prompt_input.focus()

    # ---- the controller's news ------------------------------------------------------------
    def on_tree_shown(self, message: TreeShown) -> None:
        s = self.state
        self.query_one(TokenCursor).show(s.opened.tokens, s.opened.position)
        self._draw()
        if message.note:
            self.app.notify(message.note, timeout=6)
        if not self.tree.has_focus:
            self.tree.focus()

    def on_children_arrived(self, message: ChildrenArrived) -> None:
        if message.down == (self.direction == "down"):
            self.tree.set_children(message.path, message.node)

    def on_status(self, message: Status) -> None:
        self._info(message.text, error=message.error)

    def on_tree_failed(self, message: TreeFailed) -> None:
        for field, path in zip(self.query(SaeField), message.paths or []):
            field.set_path(path)  # the SAE fields name the SAEs of the tree shown
        self._info(message.error, error=True)

    def on_tree_node_highlighted(self, event: AblationTree.NodeHighlighted) -> None:
        event.stop()
        if event.node.data is not None and self.state is not None:
            self.control.remember_cursor(event.node.data.path)

    def on_ablation_tree_expand_wanted(self, message: AblationTree.ExpandWanted) -> None:
        message.stop()
        self.control.expand(message.ref.path, message.ref.node)

    # ---- actions ------------------------------------------------------------------------
    def _selected_feature(self, allow_ablation: bool = False):
        ref = self.tree.selected
        kinds = ("feature", "ablation") if allow_ablation else ("feature",)
        if ref is None or ref.node.node.kind not in kinds:
            self.app.notify("Select a feature node first.", severity="warning", timeout=3)
            return None
        return ref.node

    def action_ablate(self) -> None:
        if self.state is not None and (node := self._selected_feature(allow_ablation=True)) is not None:
            self.control.toggle_ablation(node)

    def action_switch_direction(self) -> None:
        if self.state is None:
            return
        if self.control.switch_direction():
            self._draw()
        else:
            self.app.notify("Nothing is ablated: `a` ablates the selected feature.", timeout=4)

    def action_switch_method(self) -> None:
        self.control.switch_method()
        self._info(self._settings())

    def action_switch_mode(self) -> None:
        self.control.switch_mode()
        self._info(self._settings())

    def action_position(self, step: int) -> None:
        if (position := self.control.step_position(step)) is not None:
            self.query_one(TokenCursor).show(self.state.opened.tokens, position)

    def on_token_cursor_chosen(self, message: TokenCursor.Chosen) -> None:
        message.stop()
        if self.state is not None and message.index != self.state.opened.position:
            self.control.recompute(position=message.index)

    def on_token_cursor_moved(self, message: TokenCursor.Moved) -> None:
        message.stop()
        if self.state is not None and message.index != self.state.opened.position:
            token = visible_token(self.state.opened.tokens[message.index])
            self._info(f"position {message.index} ({token}): Enter rebuilds the tree there")

    def action_check(self) -> None:
        ref = self.tree.selected
        if self.state is None or ref is None:
            return
        if self.direction == "down":
            self.app.notify("Down-tree effects are exact already; check the up tree (d switches).", timeout=4)
            return
        self.control.check(ref.path)

    def action_inspect(self) -> None:
        if self.state is None or (node := self._selected_feature()) is None:
            return
        n = node.node
        self.post_message(OpenFeature(self.state.paths[n.site_index], n.feature))

    def action_export(self) -> None:
        if self.state is None:
            return
        try:
            path = self.control.export(Path.cwd(), time.strftime("%Y%m%d-%H%M%S"))
        except OSError as e:
            self.app.notify(f"Could not write the tree: {e.strerror or e}", severity="error")
            return
        self.last_export = path
        self.app.notify(f"Tree written to {path}", title="Export", timeout=8)

    def action_focus_prompt(self) -> None:
        self.prompt_input.focus()

    # ---- drawing ------------------------------------------------------------------------
    def _draw(self) -> None:
        s, tree, down = self.state, self.tree, self.direction == "down"
        tree.agreement = {} if down else s.checks
        tree.exact = {} if down else {p: {pair.feature: pair.exact for pair in c.pairs} for p, c in s.checks.items()}
        if down:
            tree.show(s.down, cursor=self.control.cursor)
        else:
            o = s.opened
            title = Text.assemble(("predicts ", "dim"), (visible_token(o.predicted), "bold"),
                                  (f" after {visible_token(o.tokens[o.position])} (@{o.position})", "dim"),
                                  f"  logit = {s.up.effect:.3f}")
            tree.show(s.up, title, cursor=self.control.cursor)
        self.query_one(PredictionChangeView).show(self.control.prediction, full=down)
        self._info(self._settings())

    def _settings(self) -> str:
        return f"{self.control.settings()}\n{LEGEND}"

    def _info(self, text: str, error: bool = False) -> None:
        """The info rows: settings and the legend, or a message; errors wrap, in full."""
        info = self.query_one("#ablate-info", Static)
        info.update(Text(text, overflow="fold"))
        info.set_class(error, "-error")
