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

    def show_down(self, reason: str, died: bool, remote: bool = False) -> None:
        """`remote`: the app attached over TCP, so ctrl+r reconnects rather than restarts."""
        what = "The engine died" if died else "No engine"
        restart = "reconnects" if remote else "restarts it"
        self.update(f"[b]{what}:[/b] {escape(reason)}\n"
                    f"Your prompt and results are kept. [b]ctrl+r[/b] {restart}, [b]ctrl+l[/b] shows the log.")
        self.add_class("-shown")

    def hide(self) -> None:
        self.remove_class("-shown")
