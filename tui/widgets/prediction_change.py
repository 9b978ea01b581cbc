"""The prediction before and after the current ablations (the Ablation pane).

Over the up tree it is one line (the top token before → after); over the down
tree, a table: the top tokens before and after, each with its probability before,
after and the change, and a mark where the top token changed. The numbers are the
engine's (`tree.ablate`'s `prediction`); this widget only draws them.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.protocol import PredictionChange
from tui.text import visible_token

ROWS = 5


def summary(change: PredictionChange) -> Text:
    """`top ' self' 62% → ' name' 40%  top changed`: the one-line form."""
    rows = {r.token: r for r in change.rows}
    before, after = rows[change.top_before], rows[change.top_after]
    text = Text.assemble(("prediction ", "dim"), (visible_token(change.top_before), "bold"),
                         f" {before.before:.0%} → ", (visible_token(change.top_after), "bold"),
                         f" {after.after:.0%}")
    if change.top_changed:
        text.append("  top changed", style="bold yellow")
    else:
        text.append(f"  ({before.change:+.1%})".replace("-", "−"), style="dim")
    return text


def table(change: PredictionChange, rows: int = ROWS) -> Table:
    """Token, p before, p after, change: the most likely tokens after the ablations,
    with the top token before (and after) marked."""
    t = Table(box=None, padding=(0, 1), show_edge=False, expand=False, header_style="dim")
    for name, justify in (("token", "left"), ("before", "right"), ("after", "right"), ("change", "right")):
        t.add_column(name, justify=justify, no_wrap=True)
    shown = change.rows[:rows]
    if not any(r.token == change.top_before for r in shown):  # the old top token stays in view
        shown = shown[:-1] + [next(r for r in change.rows if r.token == change.top_before)]
    for r in shown:
        mark = "▲ " if r.token == change.top_after else "  "
        style = "bold" if r.token in (change.top_before, change.top_after) else ""
        colour = "green" if r.change > 0 else "red" if r.change < 0 else "dim"
        t.add_row(Text(mark + visible_token(r.token), style=style), f"{r.before:.1%}", f"{r.after:.1%}",
                  Text(f"{r.change:+.1%}".replace("-", "−"), style=colour))
    return t


class PredictionChangeView(Static):
    DEFAULT_CSS = """
    PredictionChangeView { height: auto; padding: 0 1; display: none; }
    PredictionChangeView.-shown { display: block; }
    """

    def show(self, change: PredictionChange | None, full: bool) -> None:
        """Nothing (no ablations), the one line, or (`full`) the line and the table."""
        self.set_class(change is not None, "-shown")
        if change is None:
            self.update("")
        elif full:
            from rich.console import Group

            self.update(Group(summary(change), table(change)))
        else:
            self.update(summary(change))
