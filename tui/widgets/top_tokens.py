"""The model's top next tokens: a table with probabilities and bars; j/k to move.

Enter on a row asks the pane to append that token to the prompt (`Chosen`).

Notes
- The bar column takes the width that is left, so the table is re-filled when its
  size changes; bars are absolute (a full bar is probability 1), not scaled to the
  top token, so they can be compared across prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from engine.protocol import TokenProb
from tui.text import bar, visible_token

TOKEN_WIDTH = 16
_FIXED = 3 + TOKEN_WIDTH + 5 + 7  # "#", token, id, prob
_PADDING = 2 * 5 + 2  # cell padding of five columns, and a scrollbar's room


class TopTokensTable(DataTable):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, group=Binding.Group("Move down / up")),
        Binding("k", "cursor_up", "Up", show=False, group=Binding.Group("Move down / up")),
        Binding("g", "scroll_top", "First", show=False, group=Binding.Group("First / last")),
        Binding("G", "scroll_bottom", "Last", show=False, group=Binding.Group("First / last")),
        Binding("enter", "select_cursor", "Append", id="top.append",
                tooltip="Append the token to the prompt and predict"),
    ]
    DEFAULT_CSS = """
    TopTokensTable { height: 1fr; }
    """

    @dataclass
    class Chosen(Message):
        """A top token picked with Enter."""

        token: str

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._top: list[TokenProb] = []
        self._bar_width = 0

    def on_mount(self) -> None:
        self._fill()

    def show(self, top: list[TokenProb]) -> None:
        self._top = list(top)
        self._fill(keep_cursor=False)

    def on_resize(self) -> None:
        if self._bar_width != self._wanted_bar_width():
            self._fill()

    def _wanted_bar_width(self) -> int:
        return max(8, self.size.width - _FIXED - _PADDING)

    def _fill(self, keep_cursor: bool = True) -> None:
        row = self.cursor_row if keep_cursor else 0
        self._bar_width = width = self._wanted_bar_width()
        self.clear(columns=True)
        self.add_column("#", width=3)
        self.add_column("token", width=TOKEN_WIDTH)
        self.add_column(Text("id", justify="right"), width=5)
        self.add_column(Text("prob", justify="right"), width=7)
        self.add_column("", width=width)
        for i, entry in enumerate(self._top, 1):
            token = visible_token(entry.token)
            if len(token) > TOKEN_WIDTH:
                token = token[: TOKEN_WIDTH - 1] + "…"
            self.add_row(
                Text(str(i), style="dim", justify="right"),
                Text(token, style="bold"),
                Text(str(entry.id), style="dim", justify="right"),
                Text(f"{entry.prob:.2%}", justify="right"),
                Text(bar(entry.prob, width), style="cyan"),
            )
        if self._top:
            self.move_cursor(row=min(row, len(self._top) - 1), animate=False)

    def action_select_cursor(self) -> None:
        if self._top and 0 <= self.cursor_row < len(self._top):
            self.post_message(self.Chosen(self._top[self.cursor_row].token))
