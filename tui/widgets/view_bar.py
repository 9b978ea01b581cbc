"""The Training pane's one-line view switcher: `c Curves  f Firing  m Compare  n New run`,
with the current view highlighted.

Notes
- One line instead of a second row of tabs: at 80x24 every row counts. The keys
  are the pane's bindings; this only shows them.
"""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


class ViewBar(Widget):
    DEFAULT_CSS = """
    ViewBar { height: 1; background: $panel; }
    """

    current = reactive("curves")

    def __init__(self, views: list[tuple[str, str, str]], **kwargs) -> None:
        """`views`: (id, key, label) in order."""
        super().__init__(**kwargs)
        self.views = views

    def render(self) -> Content:
        parts = []
        for view, key, label in self.views:
            if view == self.current:
                parts.append((f" {key} {label} ", "bold reverse $accent"))
            else:
                parts.append((" ", ""))
                parts.append((key, "bold $accent"))
                parts.append((f" {label} ", "$text-muted"))
        return Content.assemble(*parts)
