"""An SAE folder shown by its name (`mlp_out-topk`); Enter or a click asks for
another folder in a small dialog, and `Changed` is posted with the new path.

Notes
- Paths are long and their common start says nothing; the name is what tells
  SAEs apart at 80 columns. The full path is in the tooltip and the dialog.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from tui.sae_paths import short_name
from tui.screens.sae_path import SaePathScreen


class SaeField(Static, can_focus=True):
    BINDINGS = [Binding("enter", "edit", "Change", id="sae.change", tooltip="Type or pick another SAE folder")]
    DEFAULT_CSS = """
    SaeField { width: auto; height: 1; padding: 0 1; background: $boost; }
    SaeField:focus { background: $primary 40%; }
    """

    @dataclass
    class Changed(Message):
        field: SaeField
        path: str

    def __init__(self, path: str, title: str = "SAE folder", **kwargs) -> None:
        super().__init__(**kwargs)
        self.path, self.title = path, title

    def on_mount(self) -> None:
        self._draw()

    def set_path(self, path: str) -> None:
        self.path = path
        self._draw()

    def _draw(self) -> None:
        self.update(Text(short_name(self.path) or "(none)", style="bold"))
        self.tooltip = self.path

    def on_click(self) -> None:
        self.action_edit()

    def action_edit(self) -> None:
        def done(path: str | None) -> None:
            if path and path != self.path:
                self.set_path(path)
                self.post_message(self.Changed(self, path))

        link = getattr(self.app, "link", None)  # where the engine runs decides what a path means
        remote = link is not None and not link.target.on_this_machine
        self.app.push_screen(SaePathScreen(self.path, self.title, link.how if remote else None), done)
