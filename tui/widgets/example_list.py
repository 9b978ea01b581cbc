"""Example windows of a feature, one line each: the peak activation, then the
context with every token shaded by the feature's activation on it.

Notes
- Lines are cut to the widget's width with the peak token kept in view (see
  `engine.feature_text.shade`), so the list is redrawn when its width changes.
- Shading is relative to the feature's maximum over the whole index, not the
  window's, so a weak example looks weak.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.protocol import Example
from engine.feature_text import shade

VALUE_WIDTH = 6


class ExampleList(Static):
    DEFAULT_CSS = """
    ExampleList { height: auto; padding: 0 0; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.examples: list[Example] = []
        self.peak = 0.0
        self._width = 0

    def show(self, examples: list[Example], peak: float) -> None:
        self.examples, self.peak = list(examples), peak
        self._draw()

    def on_resize(self) -> None:
        if self.size.width != self._width:
            self._draw()

    def _draw(self) -> None:
        self._width = self.size.width
        width = max(10, self._width - VALUE_WIDTH - 1)
        text = Text(self.title, style="bold dim", no_wrap=True)
        if not self.examples:
            text.append("\n  none", style="dim")
        for e in self.examples:
            text.append("\n")
            text.append(f"{e.max:>{VALUE_WIDTH}.2f} ", style="dim")
            text.append_text(shade(e.tokens, e.acts, self.peak, e.position, width=width))
        self.update(text)
