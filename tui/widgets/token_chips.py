"""The prompt as the model sees it: one chip per token, whitespace made visible."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.text import visible_token

_CHIP_STYLES = ("on #2f4f6f", "on #4f3f6f")  # alternate so neighbouring tokens stay apart


class TokenChips(Static):
    DEFAULT_CSS = """
    TokenChips {
        height: auto;
        max-height: 4;
        overflow-y: auto;
        padding: 0 1;
    }
    """

    def show(self, tokens: list[str]) -> None:
        text = Text(no_wrap=False)
        for i, token in enumerate(tokens):
            text.append(visible_token(token), style=_CHIP_STYLES[i % 2] + (" dim" if i == 0 else ""))
            text.append(" ")
        self.update(text)
