"""A small dialog that asks for a run folder to reopen (`o` in the Training pane): one
run's folder, or the folder of runs trained side by side (`<out>/<arch>`), which
opens them all as one comparison.

Notes
- The folder is a path on the engine's side (it reads it with `train.read`), so
  nothing here checks that it exists locally.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class OpenRunScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Close", id="open_run.close")]
    DEFAULT_CSS = """
    OpenRunScreen { align: center middle; }
    OpenRunScreen > Vertical {
        width: 64;
        max-width: 100%;
        height: auto;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    OpenRunScreen Static { color: $text-muted; }
    """

    def __init__(self, value: str = "") -> None:
        super().__init__()
        self.value = value

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = "open a run folder"
        box.border_subtitle = "enter opens · esc closes"
        with box:
            yield Static("A run folder, or a folder of side-by-side runs (one comparison); "
                         "its metrics are replayed into the table and plots.")
            yield Input(self.value, placeholder="runs/topk-b0-mlp_out-1", id="open-path", select_on_focus=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = event.value.strip()
        self.dismiss(path or None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
