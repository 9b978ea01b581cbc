"""The Graph pane: an SAE's co-activation graph (features are nodes; an edge joins two
features that fire together on the same tokens), a feature's neighbourhood in it,
and the graph against another SAE's (another seed, say).

Pick the SAE and the one to compare with (`s`, `w`), type a feature number and
press Enter (or `g` to go to one): the header shows the graph's statistics (the
edge rule in its tooltip), the plot its degree distribution, and the tree the
feature with its strongest neighbours; opening a row (Enter, →, space) adds that
neighbour's neighbours. `c` compares the two SAEs with the selected feature: its
partner in the other SAE and its best matches by structure (a table `m` moves
into), the summary figures, and both degree distributions in one plot with their
divergence. `i` opens the selected feature in the Inspector: the tree's in this
SAE, the table's in the other. `x` (or ctrl+g) cancels a load or a comparison.

This file lays out and draws; `tui/controllers/graph.py` owns the requests and
their cached answers and posts the messages handled here.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Static, Tabs

from engine.protocol import GraphStats
from tui.controllers.graph import (GraphCompared, GraphController, GraphNodeArrived, GraphRootShown,
                                   GraphStatsShown, GraphStatus)
from tui.graph_plot import degree_plot, legend
from tui.graph_text import FIGURES_NAMES, figures_lines, jsd_line, pair_text, stats_line, stats_tooltip
from tui.link import EngineLink
from tui.navigation import OpenFeature
from tui.sae_paths import saes_dir, short_name
from tui.widgets.graph_matches import MatchTable
from tui.widgets.graph_tree import NeighbourTree
from tui.widgets.plot_view import PlotView
from tui.widgets.sae_field import SaeField

DEFAULT_SAE, DEFAULT_OTHER = "mlp_out-topk", "mlp_out-topk-s1"  # two seeds of one TopK SAE
HINT = "Type a feature number, Enter: its neighbours · c compares with the other SAE"
LOADED_ACTIONS = ("compare", "inspect")  # in the footer once a feature is shown


class GraphPane(Vertical):
    BINDINGS = [
        Binding("g", "focus_feature", "Go to", id="graph.goto", tooltip="Type a feature number (Enter loads it)"),
        Binding("c", "compare", "Compare", id="graph.compare",
                tooltip="Compare with the other SAE: the selected feature's matches, both degree distributions"),
        Binding("i,o", "inspect", "Inspect", id="graph.inspect",
                tooltip="Open the selected feature in the Inspector (a match: in the other SAE)"),
        Binding("m", "focus_matches", "Matches", id="graph.matches", show=False,
                tooltip="Move into the matches in the other SAE (i opens one)"),
        Binding("s", "edit_sae('graph-sae')", "SAE", id="graph.sae", show=False, tooltip="Pick the SAE"),
        Binding("w", "edit_sae('graph-other')", "With", id="graph.other", show=False,
                tooltip="Pick the SAE to compare with"),
        Binding("x", "cancel", "Cancel", id="graph.cancel", show=False,
                tooltip="Cancel the load or the comparison under way"),
    ]
    DEFAULT_CSS = """
    GraphPane { height: 1fr; }
    GraphPane #graph-bar { height: 1; padding: 0 1; }
    GraphPane #graph-bar Label { width: auto; color: $text-muted; }
    GraphPane #graph-feature { width: 7; }
    GraphPane #graph-stats { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    GraphPane #graph-info { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    GraphPane #graph-info.-error { color: $text-error; }
    GraphPane #graph-body { height: 1fr; }
    GraphPane #graph-left { width: 1fr; }
    GraphPane #graph-right { width: 42%; }
    GraphPane #graph-pair { height: 2; margin: 0 1; }
    GraphPane #graph-pair Static { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    GraphPane #graph-figures { height: 2; padding: 0 1; }
    GraphPane #graph-legend { height: 1; padding: 0 0 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    GraphPane #graph-jsd { height: 2; padding: 0 1; }
    GraphPane #graph-plot { height: 1fr; min-height: 5; }
    GraphPane .compared { display: none; }
    GraphPane.-compared .compared { display: block; }
    """

    def __init__(self, link: EngineLink, **kwargs) -> None:
        super().__init__(**kwargs)
        self.link = link
        self.control = GraphController(link, self.post_message)
        self.loaded: tuple[str, int] | None = None  # (SAE, feature) at the tree's root
        self.stats: GraphStats | None = None  # of the SAE shown
        self.comparison: GraphCompared | None = None  # the comparison shown, with its two SAEs

    def compose(self) -> ComposeResult:
        with Horizontal(id="graph-bar"):
            yield Label("SAE ")
            yield SaeField(str(saes_dir() / DEFAULT_SAE), "The SAE whose graph is shown", id="graph-sae")
            yield Label(" vs ")
            yield SaeField(str(saes_dir() / DEFAULT_OTHER), "The SAE to compare with (same hook)",
                           id="graph-other")
            yield Label(" feature ")
            yield Input(placeholder="#", id="graph-feature", type="integer", compact=True)
            yield Label("  (Enter)")
        yield Static(Text(HINT, style="dim"), id="graph-stats")
        yield Static("", id="graph-info")
        with Horizontal(id="graph-body"):
            with Vertical(id="graph-left"):
                yield NeighbourTree(id="graph-tree")
                with Horizontal(id="graph-pair", classes="compared"):
                    yield Static("", id="graph-pair-a")
                    yield Static("", id="graph-pair-b")
                yield Static("", id="graph-figures", classes="compared")
            with Vertical(id="graph-right"):
                yield PlotView(id="graph-plot")
                yield Static("", id="graph-legend")
                yield Static("", id="graph-jsd", classes="compared")
                yield MatchTable(id="graph-matches", classes="compared")

    def on_unmount(self) -> None:
        self.control.close()

    def on_show(self) -> None:
        if not isinstance(self.app.focused, Tabs):  # someone walking the tabs with ←/→ stays there
            self.focus_content()

    def focus_content(self) -> None:
        (self.feature_input if self.loaded is None else self.tree).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in LOADED_ACTIONS:
            return self.loaded is not None
        if action == "focus_matches":
            return self.has_class("-compared")
        return True

    # ---- parts ------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.query_one("#graph-sae", SaeField).path

    @property
    def other(self) -> str:
        return self.query_one("#graph-other", SaeField).path

    @property
    def tree(self) -> NeighbourTree:
        return self.query_one(NeighbourTree)

    @property
    def matches(self) -> MatchTable:
        return self.query_one(MatchTable)

    @property
    def feature_input(self) -> Input:
        return self.query_one("#graph-feature", Input)

    @property
    def plot(self) -> PlotView:
        return self.query_one(PlotView)

    def selected_feature(self) -> int | None:
        """The tree's row under the cursor (the root when none); None before a load."""
        if self.loaded is None:
            return None
        row = self.tree.selected
        return row.feature if row is not None else self.loaded[1]

    # ---- loading ---------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text.lstrip("-").isdigit() or int(text) < 0:
            self._info("Type a feature number (0 or more).", error=True)
            return
        self.control.load(self.path, int(text))

    def action_focus_feature(self) -> None:
        self.feature_input.focus()

    def on_graph_stats_shown(self, message: GraphStatsShown) -> None:
        if message.path != self.path:
            return
        self.stats = message.stats
        stats = self.query_one("#graph-stats", Static)
        stats.update(stats_line(message.stats))
        stats.tooltip = stats_tooltip(message.stats)
        self._draw_plot()

    def on_graph_root_shown(self, message: GraphRootShown) -> None:
        if message.path != self.path:
            return
        self.tree.show(message.path, message.node, self.stats.d_sae if self.stats else None)
        self.loaded = (message.path, message.node.feature)
        self.feature_input.value = str(message.node.feature)
        self.refresh_bindings()
        if self._pane_shown() and not self.tree.has_focus and not isinstance(self.app.focused, MatchTable):
            self.tree.focus()

    def on_neighbour_tree_neighbours_wanted(self, message: NeighbourTree.NeighboursWanted) -> None:
        path = self.tree.path
        if path is not None and (node := self.control.expand(path, message.feature)) is not None:
            self.tree.fill(message.feature, node)

    def on_graph_node_arrived(self, message: GraphNodeArrived) -> None:
        if message.path == self.tree.path:
            self.tree.fill(message.feature, message.node)

    def on_graph_status(self, message: GraphStatus) -> None:
        self._info(message.text, error=message.error)

    def action_cancel(self) -> None:
        if not self.control.cancel():
            self.app.notify("Nothing is running in this pane.", timeout=3)

    # ---- SAEs -------------------------------------------------------------------------
    def action_edit_sae(self, field_id: str) -> None:
        self.query_one(f"#{field_id}", SaeField).action_edit()

    def on_sae_field_changed(self, message: SaeField.Changed) -> None:
        message.stop()
        self.control.forget()
        self.comparison = None
        self._show_comparison(False)
        if message.field.id == "graph-sae":
            self.stats = None
            self.query_one("#graph-stats", Static).update(Text(HINT, style="dim"))
            if self.loaded is not None:  # the same feature in the new SAE
                self.control.load(self.path, self.loaded[1])

    # ---- comparing ------------------------------------------------------------------------
    def action_compare(self) -> None:
        if self.loaded is None:
            self._info("Load a feature first (type its number, Enter).", error=True)
            return
        self.control.compare(self.path, self.other, self.selected_feature())

    def on_graph_compared(self, message: GraphCompared) -> None:
        if (message.path, message.other) != (self.path, self.other):
            return
        self.comparison = message
        c = message.comparison
        name_a, name_b = short_name(message.path), short_name(message.other)
        left, right = pair_text(name_a, name_b, c)
        self.query_one("#graph-pair-a", Static).update(left)
        self.query_one("#graph-pair-b", Static).update(right)
        figures = self.query_one("#graph-figures", Static)
        figures.update(figures_lines(c))
        figures.tooltip = FIGURES_NAMES
        jsd = self.query_one("#graph-jsd", Static)
        jsd.update(jsd_line(c))
        jsd.tooltip = ("Jensen-Shannon divergence (base 2) of the two degree distributions, and its square root; "
                       f"random: {name_a}'s graph against {c.random.draws} random graphs of its size "
                       "(mean ± std)")
        self.matches.show(c)
        self._show_comparison(True)

    def action_focus_matches(self) -> None:
        if self.has_class("-compared"):
            self.matches.focus()

    def _show_comparison(self, shown: bool) -> None:
        self.set_class(shown, "-compared")
        self.refresh_bindings()
        self._draw_plot()

    # ---- the Inspector --------------------------------------------------------------------
    def action_inspect(self) -> None:
        if isinstance(self.app.focused, MatchTable):
            self._inspect_match()
            return
        if (feature := self.selected_feature()) is not None:
            self.post_message(OpenFeature(self.loaded[0], feature))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._inspect_match()

    def _inspect_match(self) -> None:
        match = self.matches.selected
        if match is None or self.comparison is None:
            self.app.notify("No match to open: compare first (c).", severity="warning", timeout=3)
            return
        self.post_message(OpenFeature(self.comparison.other, match.feature))

    # ---- drawing ------------------------------------------------------------------------
    def _draw_plot(self) -> None:
        if (shown := self.comparison) is not None:
            counts, other = shown.comparison.degree_counts, shown.comparison.other_degree_counts
            names = (short_name(shown.path), short_name(shown.other))
        elif self.stats is not None:
            counts, other, names = self.stats.degree_counts, None, (short_name(self.path), None)
        else:
            return
        self.query_one("#graph-legend", Static).update(legend(*names))
        self.plot.set_draw(lambda width, height: degree_plot(counts, other, width, height))

    def _pane_shown(self) -> bool:
        """Whether this pane's tab is the one shown (a load may end while another is)."""
        return all(w.display for w in self.ancestors_with_self if isinstance(w, Widget))

    def _info(self, text: str, error: bool = False) -> None:
        """The info row: progress, a note or an error; errors wrap, in full."""
        info = self.query_one("#graph-info", Static)
        info.update(Text(text, overflow="fold"))
        info.set_class(error, "-error")
