"""A feature's activation histogram (non-zero activations, log-spaced bins), drawn
with plotext at the widget's size."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.protocol import Histogram
from engine.feature_text import histogram

HEIGHT = 10


class HistogramView(Static):
    DEFAULT_CSS = f"""
    HistogramView {{ height: {HEIGHT + 1}; }}
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data: Histogram | None = None
        self._width = 0

    def show(self, data: Histogram | None) -> None:
        self.data = data
        self._draw()

    def on_resize(self) -> None:
        if self.size.width != self._width:
            self._draw()

    def _draw(self) -> None:
        self._width = self.size.width
        text = Text("activations", style="bold dim")
        if self.data is not None and self._width > 0:
            text.append("\n")
            text.append_text(histogram(self.data.edges, self.data.counts, self._width, HEIGHT))
        self.update(text)
