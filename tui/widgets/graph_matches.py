"""The compared feature's matches in the other SAE, as a small table the cursor can
move into: its partner (by decoder cosine) and the best few by graph structure.
`selected` is the match under the cursor; the pane opens it in the Inspector (`i`,
or Enter here), in the other SAE.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from engine.protocol import FeatureMatch, GraphComparison
from tui.graph_text import describe, match_rows


class MatchTable(DataTable):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, group=Binding.Group("Move down / up")),
        Binding("k", "cursor_up", "Up", show=False, group=Binding.Group("Move down / up")),
    ]
    DEFAULT_CSS = """
    MatchTable { height: auto; max-height: 4; scrollbar-size-horizontal: 0; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", show_header=False, **kwargs)
        self.matches: list[FeatureMatch] = []
        self.tooltip = ("Matches in the other SAE (i or Enter opens one in the Inspector)\n"
                        "partner: its one-to-one decoder match, score the decoder cosine\n"
                        "struct: the best candidates by graph structure (anchored), score the structural score")

    def on_mount(self) -> None:
        self.add_columns("by", "#", "score", "description")  # no header row: a row is worth more at 80x24

    def show(self, c: GraphComparison) -> None:
        self.clear()
        self.matches = []
        for by, m in match_rows(c):
            self.matches.append(m)
            self.add_row(by, Text(f"#{m.feature}", style="bold"), Text(f"{m.score:.3f}", justify="right"),
                         describe(m.description))
        if self.matches:
            self.move_cursor(row=0)

    @property
    def selected(self) -> FeatureMatch | None:
        if not self.matches or not 0 <= self.cursor_row < len(self.matches):
            return None
        return self.matches[self.cursor_row]
