"""The log view: engine stderr, client notes and app messages, toggled with `l`.

Engine output reaches the screen only here (the engine's stderr is a pipe), so a
library warning or a traceback can never draw over the app.

Notes
- Lines are kept (up to `MAX_LINES`) while the view is hidden, so opening it after
  a crash shows the traceback.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.binding import Binding
from textual.widgets import RichLog

MAX_LINES = 5000
_STYLES = {"engine": "", "client": "yellow", "app": "cyan"}


class LogView(RichLog):
    BINDINGS = [
        Binding("j", "scroll_down", "Down", show=False, group=Binding.Group("Scroll down / up")),
        Binding("k", "scroll_up", "Up", show=False, group=Binding.Group("Scroll down / up")),
        Binding("g", "scroll_home", "Top", show=False, group=Binding.Group("Top / bottom")),
        Binding("G", "scroll_end", "Bottom", show=False, group=Binding.Group("Top / bottom")),
    ]
    DEFAULT_CSS = """
    LogView {
        display: none;
        height: 45%;
        min-height: 5;
        border-top: solid $primary;
        background: $surface;
    }
    LogView.-shown { display: block; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, highlight=False, **kwargs)
        self.border_title = "log"

    def add(self, source: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        line = Text.assemble((stamp + " ", "dim"), (f"{source:6} ", "dim"), (text, _STYLES.get(source, "")))
        self.write(line)

    @property
    def shown(self) -> bool:
        return self.has_class("-shown")

    def toggle(self) -> bool:
        self.toggle_class("-shown")
        return self.shown
