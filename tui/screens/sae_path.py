"""A dialog for an SAE folder: type a path (completed from the SAEs under
weights/saes) or pick one of those from the list. Dismisses with the path, or
None on Escape.

Notes
- The folder is not checked here: the engine may run elsewhere (ssh, TCP) and is
  the one that reads it, so its error, if any, is what the user sees.
- With a local engine a relative path is made absolute against the app's folder
  (where the user typed it); with a remote one the dialog says that paths are the
  engine's, and sends them as typed.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.sae_paths import local_saes, resolve_typed, short_name


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

    def __init__(self, path: str, title: str = "SAE folder", engine: str | None = None) -> None:
        """`engine`: None for an engine on this machine, else where it runs (remote)."""
        super().__init__()
        self.path, self.title, self.engine = path, title, engine
        self.known = local_saes() if engine is None else []

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = self.title
        box.border_subtitle = "enter uses it · esc keeps the old one"
        with box:
            yield Input(self.path, id="sae-path", suggester=SuggestFromList(self.known, case_sensitive=True))
            if self.engine is not None:
                yield Static(f"Paths are the engine's ({self.engine}): absolute, or relative to its folder.",
                             id="sae-remote")
            if self.known:
                yield Static("or pick one under weights/saes (tab, then ↑/↓ and enter):")
                yield OptionList(*(Option(short_name(p), id=p) for p in self.known), id="sae-known")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(resolve_typed(event.value, self.engine is None) or None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)
