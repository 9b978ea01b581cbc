"""The help screen (`?` or F1): every key binding, grouped by where it works.

Notes
- The rows are built from the widgets' own `BINDINGS`, so help cannot drift from
  what the keys do; the app passes the groups in, which keeps this screen free of
  imports from the app.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HelpSections = list[tuple[str, list[Binding]]]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help.close"),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, sections: HelpSections) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll()
        scroll.border_title = "saescope keys"
        scroll.border_subtitle = "esc closes"
        with scroll:
            yield Static(self._table())

    def _table(self) -> Table:
        table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
        table.add_column("key", style="bold", width=18, no_wrap=True)
        table.add_column("what")
        for title, bindings in self.sections:
            table.add_row(Text(title, style="bold underline"), "")
            for keys, what in self._rows(bindings):
                table.add_row(keys, what)
        return table

    def _rows(self, bindings: list[Binding]) -> list[tuple[str, str]]:
        """(keys, description) rows; bindings of one group share a row (`j, k  Move`)."""
        rows: list[tuple[str, str]] = []
        last_group = None
        for b in bindings:
            if not b.description:
                continue
            keys = ", ".join(self.app.get_key_display(Binding(k, b.action)) for k in b.key.split(","))
            if b.group is not None and b.group == last_group:
                rows[-1] = (f"{rows[-1][0]}, {keys}", rows[-1][1])
            else:
                rows.append((keys, b.group.description if b.group else b.tooltip or b.description))
            last_group = b.group
        return rows

    def action_scroll(self, direction: str) -> None:
        scroll = self.query_one(VerticalScroll)
        scroll.scroll_down() if direction == "down" else scroll.scroll_up()
