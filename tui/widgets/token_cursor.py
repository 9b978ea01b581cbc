"""A prompt's tokens as chips with one of them chosen: left/right move the choice.

Used for the position in the Ablation pane and the token in the Live view. It
posts `Moved` when the choice changes and `Chosen` on Enter.

Notes
- Chips alternate two backgrounds like the Predict pane's, so neighbouring tokens
  stay apart; the chosen one is drawn reversed, and stays visible unfocused.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from tui.text import visible_token

_CHIP_STYLES = ("on #2f4f6f", "on #4f3f6f")


class TokenCursor(Static, can_focus=True):
    BINDINGS = [
        Binding("left", "move(-1)", "Left", show=False, group=Binding.Group("Choose a token")),
        Binding("right", "move(1)", "Right", show=False, group=Binding.Group("Choose a token")),
        Binding("home", "move_to(0)", "First", show=False),
        Binding("end", "move_to(-1)", "Last", show=False),
        Binding("enter", "choose", "Use", id="tokens.choose", tooltip="Use the chosen token"),
    ]
    DEFAULT_CSS = """
    TokenCursor { height: auto; max-height: 3; padding: 0 1; }
    TokenCursor:focus { background: $boost; }
    """

    @dataclass
    class Moved(Message):
        cursor: TokenCursor
        index: int

    @dataclass
    class Chosen(Message):
        cursor: TokenCursor
        index: int

    def __init__(self, hint: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.hint = hint
        self.tokens: list[str] = []
        self.index = 0

    def on_mount(self) -> None:
        self._draw()

    def show(self, tokens: list[str], index: int | None = None) -> None:
        self.tokens = list(tokens)
        self.index = len(self.tokens) - 1 if index is None else max(0, min(index, len(self.tokens) - 1))
        self._draw()

    def action_move(self, step: int) -> None:
        self.action_move_to(self.index + step)

    def action_move_to(self, index: int) -> None:
        if not self.tokens:
            return
        index = len(self.tokens) - 1 if index < 0 else min(index, len(self.tokens) - 1)
        if index != self.index:
            self.index = index
            self._draw()
            self.post_message(self.Moved(self, index))

    def action_choose(self) -> None:
        if self.tokens:
            self.post_message(self.Chosen(self, self.index))

    def _draw(self) -> None:
        if not self.tokens:
            self.update(Text(self.hint, style="dim"))
            return
        text = Text()
        for i, token in enumerate(self.tokens):
            style = "reverse bold" if i == self.index else _CHIP_STYLES[i % 2]
            text.append(visible_token(token), style=style)
            text.append(" ")
        self.update(text)
