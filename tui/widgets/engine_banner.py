"""A banner under the status bar saying that the engine is down, why, and what to do.

It is hidden while the engine runs. It never hides the panes' contents: the
prompt and the last results stay where they were.
"""

from __future__ import annotations

from textual.markup import escape
from textual.widgets import Static


class EngineBanner(Static):
    DEFAULT_CSS = """
    EngineBanner {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error-muted;
        color: $text;
    }
    EngineBanner.-shown { display: block; }
    """

    def show_down(self, reason: str, died: bool) -> None:
        what = "The engine died" if died else "No engine"
        self.update(f"[b]{what}:[/b] {escape(reason)}\n"
                    "Your prompt and results are kept. [b]ctrl+r[/b] restarts it, [b]ctrl+l[/b] shows the log.")
        self.add_class("-shown")

    def hide(self) -> None:
        self.remove_class("-shown")
