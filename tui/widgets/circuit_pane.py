"""The Circuit pane: find the circuit of SAE features behind a task, and explore it.

Pick a task (a shipped task's name, or a JSON-lines file) and the SAE sites
(upstream first), press Enter (or `f`): the engine sweeps thresholds (`points`
circuits: fewer is faster, coarser) and shows the smallest circuit that is
faithful enough. `m` cycles the method: attribution, integrated gradients (ig),
mask (a binary mask over (position, latent) trained per lambda on a fixed grid;
`steps` in the pane: Adam steps per mask, fewer is faster and cruder).
`+`/`-` step along the sweep (the circuit at the next higher / lower threshold,
or lambda), `e` puts error nodes in or out, `v` measures the selected node (and
its edge) exactly, `i` opens the feature in the Inspector, `c` cancels a search
or a mask in training (the keys: BINDINGS, also in the help screen and the palette).

On screen: the summary of the circuit shown (size, threshold or lambda,
faithfulness with its plain m(C)/m(M), completeness), the faithfulness curves of
every method searched on this task and these sites with a marker at that circuit,
and the circuit as a tree (metric, the nodes feeding it, their upstream nodes).

This file lays out and draws; `tui/controllers/circuit.py` owns the requests and
the state and posts the messages handled here.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Static, Tabs

from engine.protocol import MASK_STEPS
from tui.circuit_inputs import DEFAULT_POINTS, DEFAULT_TASK, default_sites, shipped_tasks, task_param
from tui.circuit_layout import CircuitLayout, summary
from tui.circuit_plot import curve_plot, legend
from tui.controllers.circuit import CircuitController, CircuitShown, CircuitStatus
from tui.link import EngineLink
from tui.navigation import OpenFeature
from tui.sae_paths import short_name
from tui.sae_session import SaeSession
from tui.screens.circuit_sites import CircuitSitesScreen
from tui.widgets.circuit_tree import CircuitTree
from tui.widgets.plot_view import PlotView

LEGEND = "row: effect on the metric · →edge into the row above · =exact (v verifies)"
HINT = "Enter (or f) searches a circuit · s changes the sites · m the method"
CIRCUIT_ACTIONS = ("step", "toggle_errors", "verify", "inspect")  # need a circuit
# one footer entry and one help row for both directions
THRESHOLD = Binding.Group("Threshold", compact=True)


class CircuitPane(Vertical):
    BINDINGS = [
        Binding("f", "find", "Find", id="circuit.find", show=False,
                tooltip="Search a circuit for the task through the sites"),
        Binding("c", "cancel", "Cancel", id="circuit.cancel", show=False,
                tooltip="Cancel the search (the sweep so far is shown, marked partial) or a mask in training"),
        Binding("plus,right_square_bracket", "step(1)", "Raise threshold", id="circuit.raise", key_display="+",
                tooltip="Raise the threshold (mask: lambda): the next smaller circuit of the sweep",
                group=THRESHOLD),
        Binding("minus,left_square_bracket", "step(-1)", "Lower threshold", id="circuit.lower", key_display="-",
                tooltip="Lower the threshold (mask: lambda): the next larger circuit of the sweep",
                group=THRESHOLD),
        Binding("e", "toggle_errors", "Errors", id="circuit.errors", tooltip="Error nodes in or out of the circuit"),
        Binding("v", "verify", "Verify", id="circuit.verify", show=False,  # the legend row names it
                tooltip="Measure the selected node (and its edge) exactly, beside the estimate"),
        Binding("i,o", "inspect", "Inspect", id="circuit.inspect", tooltip="Open the selected feature in the Inspector"),
        Binding("m", "switch_method", "Method", id="circuit.method", show=False,
                tooltip="Switch the search's method: attribution, integrated gradients (ig) or mask"),
        Binding("s", "edit_sites", "Sites", id="circuit.sites", show=False,
                tooltip="Change the SAE sites (folders, upstream first)"),
        Binding("t", "focus_task", "Task", id="circuit.task", show=False, tooltip="Type another task"),
        Binding("p", "toggle_plot", "Plot", id="circuit.plot", show=False, tooltip="Show or hide the curves"),
    ]
    DEFAULT_CSS = """
    CircuitPane { height: 1fr; }
    CircuitPane .row { height: 1; padding: 0 1; }
    CircuitPane .row Label { width: auto; color: $text-muted; }
    CircuitPane #circuit-task { width: 20; }
    CircuitPane #circuit-points, CircuitPane #circuit-steps { width: 5; }
    CircuitPane .mask-only { display: none; }
    CircuitPane.-mask .mask-only { display: block; }
    CircuitPane.-mask .sweep-only { display: none; }
    CircuitPane #circuit-method { width: auto; padding: 0 1; background: $boost; }
    CircuitPane #circuit-sites { width: 1fr; }
    CircuitPane #circuit-info { height: auto; max-height: 4; padding: 0 1; color: $text-muted; }
    CircuitPane #circuit-info.-error { color: $text-error; }
    CircuitPane #circuit-summary { height: auto; max-height: 2; padding: 0 1; }
    CircuitPane #circuit-legend { height: 1; padding: 0 1; }
    CircuitPane #circuit-plot { height: 7; }
    CircuitPane.-no-plot #circuit-legend, CircuitPane.-no-plot #circuit-plot { display: none; }
    """

    def __init__(self, link: EngineLink, saes: SaeSession, **kwargs) -> None:
        super().__init__(**kwargs)
        self.link = link
        self.control = CircuitController(link, saes, self.post_message)
        self.sites = default_sites()

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("task ")
            yield Input(DEFAULT_TASK, placeholder="a shipped task or a .jsonl file", id="circuit-task",
                        compact=True, suggester=SuggestFromList(shipped_tasks(), case_sensitive=True))
            yield Label("  method")
            yield Static(self.control.method, id="circuit-method")
            # a sweep's points for attribution and ig, a mask's training steps for the mask
            yield Label("  points ", classes="sweep-only")
            yield Input(placeholder=str(DEFAULT_POINTS), id="circuit-points", type="integer", compact=True,
                        classes="sweep-only")
            yield Label("  steps ", classes="mask-only")
            yield Input(placeholder=str(MASK_STEPS), id="circuit-steps", type="integer", compact=True,
                        classes="mask-only", tooltip="Adam steps per mask (empty: the engine's default)")
            yield Label("  (Enter searches)")
        with Horizontal(classes="row"):
            yield Label("sites ")
            yield Static("", id="circuit-sites")
        yield Static("", id="circuit-info")
        yield Static(Text(HINT, style="dim"), id="circuit-summary")
        yield Static("", id="circuit-legend")
        yield PlotView(id="circuit-plot")
        yield CircuitTree(id="circuit-tree")

    def on_mount(self) -> None:
        self._draw_sites()
        self._info(LEGEND)

    def on_unmount(self) -> None:
        self.control.close()

    def on_show(self) -> None:
        if not isinstance(self.app.focused, Tabs):  # someone walking the tabs with ←/→ stays there
            self.focus_content()

    def focus_content(self) -> None:
        (self.task_input if self.state is None else self.tree).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The circuit's keys are in the footer once there is a circuit."""
        if action in CIRCUIT_ACTIONS:
            return self.state is not None
        return True

    # ---- parts ------------------------------------------------------------------------
    @property
    def state(self):
        return self.control.state

    @property
    def tree(self) -> CircuitTree:
        return self.query_one(CircuitTree)

    @property
    def task_input(self) -> Input:
        return self.query_one("#circuit-task", Input)

    @property
    def plot(self) -> PlotView:
        return self.query_one(PlotView)

    # ---- searching --------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_find()

    def action_find(self) -> None:
        self.control.points = positive(self.query_one("#circuit-points", Input).value)
        self.control.mask_steps = positive(self.query_one("#circuit-steps", Input).value)
        task = task_param(self.task_input.value, self.link.target.on_this_machine)
        if self.control.find(task, self.sites) is None:
            self.task_input.focus()

    def action_cancel(self) -> None:
        if not self.control.cancel():
            self.app.notify("No search is running.", timeout=3)

    def action_switch_method(self) -> None:
        method = self.control.switch_method()
        self.query_one("#circuit-method", Static).update(method)
        self.set_class(method == "mask", "-mask")

    def action_edit_sites(self) -> None:
        def done(paths: list[str] | None) -> None:
            if paths:
                self.sites = paths
                self._draw_sites()

        remote = not self.link.target.on_this_machine
        self.app.push_screen(CircuitSitesScreen(self.sites, self.link.how if remote else None), done)

    def action_focus_task(self) -> None:
        self.task_input.focus()

    # ---- the controller's news --------------------------------------------------------------
    def on_circuit_shown(self, message: CircuitShown) -> None:
        self._draw()
        self.refresh_bindings()
        self._info(message.note or LEGEND)
        if message.new and not self.state.complete:
            self.app.notify(message.note, timeout=6)
        if message.new and not self.tree.has_focus and self._pane_shown():  # not from another pane
            self.tree.focus()

    def on_circuit_status(self, message: CircuitStatus) -> None:
        self._info(message.text, error=message.error)

    def _pane_shown(self) -> bool:
        """Whether this pane's tab is the one shown (a search may end while another is)."""
        return all(w.display for w in self.ancestors_with_self if isinstance(w, Widget))

    # ---- the circuit ----------------------------------------------------------------------
    def action_step(self, step: int) -> None:
        if self.state is not None:
            self.control.step(step)

    def action_toggle_errors(self) -> None:
        if self.state is not None:
            self.control.toggle_errors()

    def _selected_node(self, feature: bool = False):
        row = self.tree.selected
        if self.state is None or row is None or row.kind != "node" or (feature and row.node.feature is None):
            self.app.notify("Select a feature node first." if feature else "Select a node first.",
                            severity="warning", timeout=3)
            return None
        return row

    def action_verify(self) -> None:
        if (row := self._selected_node()) is not None:
            self.control.verify(row.node, row.parent)

    def action_inspect(self) -> None:
        if (row := self._selected_node(feature=True)) is None:
            return
        n, s = row.node, self.state
        path = s.paths[n.site_index] if n.site_index < len(s.paths) else s.found.sites[n.site_index].path
        self.post_message(OpenFeature(path, n.feature))

    def action_toggle_plot(self) -> None:
        self.toggle_class("-no-plot")

    # ---- drawing ------------------------------------------------------------------------
    def _draw(self) -> None:
        s = self.state
        tree = self.tree
        tree.exact_nodes = {k: v.exact for k, v in s.verified_nodes.items()}
        tree.exact_edges = {k: v.exact for k, v in s.verified_edges.items()}
        tree.show(CircuitLayout(s.found), s.complete)
        self._draw_summary()
        curves = self.control.curves_shown()
        self.query_one("#circuit-legend", Static).update(
            legend(s.errors, {m for m, points in curves.items() if points}, s.method))
        shown = s.found.figures.nodes
        self.plot.set_draw(lambda width, height: curve_plot(curves, shown, width, height))

    def _draw_summary(self) -> None:
        if self.state is not None:
            line = self.query_one("#circuit-summary", Static)
            width = line.content_size.width or max(0, self.size.width - 2)  # the pane's padding
            line.update(summary(self.state.found, self.state.complete, width or None))  # no size yet: one line

    def on_resize(self) -> None:
        self._draw_summary()  # its parts break between lines by the width

    def _draw_sites(self) -> None:
        text = Text(" → ".join(short_name(p) for p in self.sites) or "(none)", style="bold",
                    no_wrap=True, overflow="ellipsis")
        text.append("  (s changes)", style="dim")
        sites = self.query_one("#circuit-sites", Static)
        sites.update(text)
        sites.tooltip = "\n".join(self.sites)

    def _info(self, text: str, error: bool = False) -> None:
        """The info row: the legend, progress or a message; errors wrap, in full."""
        info = self.query_one("#circuit-info", Static)
        info.update(Text(text, overflow="fold"))
        info.set_class(error, "-error")


def positive(typed: str) -> int | None:
    """A typed count as sent: a positive integer, else None (the engine's default)."""
    typed = typed.strip()
    return int(typed) if typed.isdigit() and int(typed) > 0 else None
