"""A plot that fills its widget: a function of (width, height) that returns ANSI text
(see `tui.plots`), redrawn when the widget is resized or `redraw()` is called.

Notes
- The owner decides when to redraw (the Training pane does it on a timer, when
  something changed), so a flood of metrics never becomes a flood of renders.
- Nothing is drawn while the widget is off screen (another tab or view) or has
  no size yet; it draws when it is shown or resized.
"""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.widgets import Static

Draw = Callable[[int, int], str]


class PlotView(Static):
    DEFAULT_CSS = """
    PlotView { width: 1fr; height: 1fr; }
    """

    def __init__(self, draw: Draw | None = None, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._draw = draw
        self._stale = False
        self.drawn = ""
        """The plain text last drawn (tests read it)."""

    def set_draw(self, draw: Draw) -> None:
        self._draw = draw
        self.redraw()

    def redraw(self) -> None:
        width, height = self.content_size
        if self._draw is None or width <= 0 or height <= 0:
            return
        if not self.is_on_screen:  # another tab or view: draw when shown
            self._stale = True
            return
        self._stale = False
        text = Text.from_ansi(self._draw(width, height), no_wrap=True, overflow="crop", end="")
        self.drawn = text.plain
        self.update(text)

    def on_resize(self) -> None:
        self.redraw()

    def on_show(self) -> None:
        if self._stale:
            self.redraw()
