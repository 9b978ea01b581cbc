"""The Training pane's runs: one row each with its latest step record; j/k to move,
space to show or hide its curves.

Columns: name (in the run's plot colour, ● drawn / ○ hidden), arch, step/total,
loss, explained variance, L0, quiet fraction (live: not fired within the run's last
`dead_window` training tokens), dead fraction (of the final evaluation: never fired
on the first `DEAD_TOKENS` held-out tokens; "–" until the run has finished), tokens
per second, state (`tui.training.RunState`: stopped is checkpointed and
resumable). The names and rules are `engine.figures`'s, also in the table's
tooltip; "dead" means only the final evaluation's figure, the one `saescope eval`
and the Inspector show.

Notes
- Rows are keyed by the run's folder; cells are rewritten only for runs whose
  `version` moved since the last fill, so a redraw with ten runs training costs
  a few cell updates, not a new table.
- The name column takes the width the others leave (up to `NAME_MAX`), so
  nothing scrolls sideways at 80 columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from engine.figures import rule
from engine.protocol import TrainRecord
from tui.training import Run, fmt

# (key, heading, width, justify); the name column's width is computed. Cells have no
# padding: each width holds a one-cell gap (left columns start with a space).
COLUMNS = (("arch", " arch", 10, "left"), ("step", "step", 9, "right"), ("loss", "loss", 6, "right"),
           ("ev", "EV", 6, "right"), ("l0", "L0", 6, "right"), ("quiet", "quiet", 6, "right"),
           ("dead", "dead", 5, "right"), ("rate", "tok/s", 6, "right"), ("state", " state", 11, "left"))
# Which figure each column shows (its name and rule in the tooltip).
FIGURE_OF = {"ev": "explained_variance", "l0": "l0", "quiet": "dead_fraction_window", "dead": "dead_fraction"}
TOOLTIP = "\n".join(rule(f) for f in FIGURE_OF.values()) + "\n(EV, L0, quiet: the latest training step)"
_STATE_STYLE = {"starting": "dim", "running": "green", "stopping": "yellow", "stopped": "yellow",
                "unfollowed": "dim", "finished": "bold", "failed": "red"}
_SCROLLBAR = 2
NAME_MAX = 32


def run_cells(run: Run) -> list[Text]:
    """The row of one run (tests compare these with the engine's records)."""
    last = run.last or TrainRecord("step", -1)
    step = "–" if run.last is None else f"{last.step + 1}/{run.total_steps}"
    values = [" " + run.arch, step, fmt(last.loss), fmt(last.explained_variance),
              fmt(last.l0), fmt(last.dead_fraction_window, "pct"),
              fmt(run.final.dead_fraction, "pct") if run.final else "–",
              fmt(last.tokens_per_s, "rate") if run.state in ("running", "starting") else "–",
              " " + run.state]
    cells = [Text(v, justify=j) for v, (_, _, _, j) in zip(values, COLUMNS)]
    cells[-1].stylize(_STATE_STYLE.get(run.state, ""))
    return cells


def name_cell(run: Run) -> Text:
    dot = "●" if run.shown else "○"
    return Text.assemble((" " + dot + " ", Style(color=f"color({run.colour})")), run.name,
                         overflow="ellipsis", no_wrap=True)


class RunsTable(DataTable):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, group=Binding.Group("Move down / up")),
        Binding("k", "cursor_up", "Up", show=False, group=Binding.Group("Move down / up")),
        Binding("g", "scroll_top", "First", show=False, group=Binding.Group("First / last")),
        Binding("G", "scroll_bottom", "Last", show=False, group=Binding.Group("First / last")),
        Binding("space", "toggle_shown", "Show", id="runs.toggle_shown", show=False,
                tooltip="Show or hide the run's curves"),
    ]
    DEFAULT_CSS = """
    RunsTable { height: auto; max-height: 8; }
    """

    @dataclass
    class ToggleShown(Message):
        out: str

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, cell_padding=0, **kwargs)
        self._runs: list[Run] = []
        self._versions: dict[str, int] = {}
        self._name_width = 0
        self.tooltip = TOOLTIP

    def on_mount(self) -> None:
        self._rebuild()

    @property
    def selected(self) -> str | None:
        """The folder of the run under the cursor."""
        if not self._runs or not 0 <= self.cursor_row < len(self._runs):
            return None
        return self._runs[self.cursor_row].out

    def show(self, runs: list[Run]) -> None:
        if [r.out for r in runs] != [r.out for r in self._runs]:
            self._runs = list(runs)
            self._rebuild()
            return
        for run in runs:
            if self._versions.get(run.out) != run.version:
                self._versions[run.out] = run.version
                self.update_cell(run.out, "name", name_cell(run))
                for (key, *_), cell in zip(COLUMNS, run_cells(run)):
                    self.update_cell(run.out, key, cell)

    def select(self, out: str) -> None:
        for i, run in enumerate(self._runs):
            if run.out == out:
                self.move_cursor(row=i, animate=False)

    def on_resize(self) -> None:
        if self._name_width != self._wanted_name_width():
            self._rebuild()

    def _wanted_name_width(self) -> int:
        return min(NAME_MAX, max(10, self.size.width - sum(c[2] for c in COLUMNS) - _SCROLLBAR))

    def _rebuild(self) -> None:
        keep = self.selected
        self._name_width = self._wanted_name_width()
        self.clear(columns=True)
        self.add_column(" run", width=self._name_width, key="name")
        for key, heading, width, justify in COLUMNS:
            self.add_column(Text(heading, justify=justify), width=width, key=key)
        self._versions = {}
        for run in self._runs:
            self._versions[run.out] = run.version
            self.add_row(name_cell(run), *run_cells(run), key=run.out)
        if keep is not None:
            self.select(keep)

    def action_toggle_shown(self) -> None:
        if self.selected is not None:
            self.post_message(self.ToggleShown(self.selected))
