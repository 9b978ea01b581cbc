"""The prompt line of the Predict pane: an Input that hands focus to the results on Escape."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    BINDINGS = [
        Binding("enter", "submit", "Predict", id="prompt.submit",
                tooltip="Predict the next token after the prompt"),
        Binding("escape", "leave", "Results", id="prompt.leave",
                tooltip="Leave the prompt for the results list"),
    ]
    DEFAULT_CSS = """
    PromptInput { margin: 0 0; }
    """

    def action_leave(self) -> None:
        self.screen.focus_next()
