"""The help screen (`?` or F1): every key binding, grouped by where it works.

Notes
- The rows are built from the widgets' own `BINDINGS`, so help cannot drift from
  what the keys do; the app passes the groups in, which keeps this screen free of
  imports from the app.
"""

from __future__ import annotations

import re

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
        table.add_column("key", style="bold", width=20, no_wrap=True)
        table.add_column("what")
        for title, bindings in self.sections:
            table.add_row(Text(title, style="bold underline"), "")
            for keys, what in self._rows(bindings):
                table.add_row(keys, what)
        return table

    def _rows(self, bindings: list[Binding]) -> list[tuple[str, str]]:
        """(keys, description) rows; bindings of one group share a row (`j, k  Move`,
        `1 … 8  Jump to neighbour`), except those with a tooltip of their own, which
        say more than the group's footer label (the Circuit pane's `+` and `-`)."""
        rows: list[tuple[list[str], str]] = []
        last_group = None
        for b in bindings:
            if not b.description:
                continue
            keys = [self._key(k) for k in b.key.split(",")]
            group = b.group if not b.tooltip else None
            if group is not None and group == last_group:
                rows[-1][0].extend(keys)
            else:
                rows.append((keys, group.description if group else b.tooltip or b.description))
            last_group = group
        return [(keys[0] + " … " + keys[-1] if len(keys) > 4 else ", ".join(keys), what) for keys, what in rows]

    def _key(self, key: str) -> str:
        shown = self.app.get_key_display(Binding(key, ""))
        return shown.upper() if re.fullmatch(r"f\d+", shown) else shown

    def action_scroll(self, direction: str) -> None:
        scroll = self.query_one(VerticalScroll)
        scroll.scroll_down() if direction == "down" else scroll.scroll_up()
