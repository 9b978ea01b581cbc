"""The question `ctrl+q` asks while training runs: leave them running, stop them, or stay.

Training runs in its own process on the engine's side, so leaving it running is
real: the app quits, the run goes on, and the app finds it again when it is
opened next (`TrainPane.reconnected`). Stopping checkpoints it (`s` resumes it).
"""

from __future__ import annotations

from typing import Literal

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

Choice = Literal["leave", "stop"]


class QuitTrainingScreen(ModalScreen[Choice | None]):
    BINDINGS = [Binding("escape,c", "choose('')", "Stay", id="quit_training.stay"),
                Binding("l", "choose('leave')", "Leave running", id="quit_training.leave"),
                Binding("s", "choose('stop')", "Stop", id="quit_training.stop")]
    DEFAULT_CSS = """
    QuitTrainingScreen { align: center middle; }
    QuitTrainingScreen > Vertical {
        width: 64;
        max-width: 100%;
        height: auto;
        border: round $warning;
        background: $surface;
        padding: 0 1;
    }
    QuitTrainingScreen Horizontal { height: auto; margin-top: 1; }
    QuitTrainingScreen Button { margin-right: 1; }
    """

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = "training is running"
        box.border_subtitle = "l leave running · s stop · esc stay"
        what = ", ".join(self.names[:4]) + (f" and {len(self.names) - 4} more" if len(self.names) > 4 else "")
        with box:
            yield Static(f"{what} {'is' if len(self.names) == 1 else 'are'} training. Leave "
                         f"{'it' if len(self.names) == 1 else 'them'} running after the app quits "
                         "(reopen the app to follow), or stop (checkpointed, s resumes)?", id="quit-question")
            with Horizontal():
                yield Button("Leave running", id="quit-leave", variant="primary", compact=True)
                yield Button("Stop and quit", id="quit-stop", variant="warning", compact=True)
                yield Button("Stay", id="quit-stay", compact=True)

    def on_mount(self) -> None:
        self.query_one("#quit-leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_choose({"quit-leave": "leave", "quit-stop": "stop"}.get(event.button.id or "", ""))

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice if choice in ("leave", "stop") else None)  # type: ignore[arg-type]
