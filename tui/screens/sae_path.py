"""A dialog for an SAE folder: type a path (completed from the SAEs under
weights/saes) or pick one of those from the list. Dismisses with the path, or
None on Escape.

Notes
- The folder is not checked here: the engine may run elsewhere (ssh, TCP) and is
  the one that reads it, so its error, if any, is what the user sees.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.sae_paths import local_saes, short_name


class SaePathScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="sae_path.close")]
    DEFAULT_CSS = """
    SaePathScreen { align: center middle; }
    SaePathScreen > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    SaePathScreen Static { color: $text-muted; }
    SaePathScreen OptionList, SaePathScreen OptionList:focus { height: auto; max-height: 10; border: none; }
    """

    def __init__(self, path: str, title: str = "SAE folder") -> None:
        super().__init__()
        self.path, self.title = path, title
        self.known = local_saes()

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = self.title
        box.border_subtitle = "enter uses it · esc keeps the old one"
        with box:
            yield Input(self.path, id="sae-path", suggester=SuggestFromList(self.known, case_sensitive=True))
            if self.known:
                yield Static("or pick one under weights/saes (tab, then ↑/↓ and enter):")
                yield OptionList(*(Option(short_name(p), id=p) for p in self.known), id="sae-known")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)
