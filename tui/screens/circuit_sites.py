"""A dialog for the Circuit pane's SAE sites: an ordered list of SAE folders, upstream
first, typed on one line (split like a shell: spaces, quotes), or built by picking
folders under weights/saes, each pick added at the end. Dismisses with the list,
or None on Escape.

Notes
- The order is not checked here: the engine knows the model and says which sites
  are out of order, and the pane shows its error whole.
- Paths are resolved as the SAE dialog does (`tui.circuit_inputs.parse_sites`):
  absolute against the app's folder for an engine on this machine, as typed for a
  remote one.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.circuit_inputs import format_sites, parse_sites
from tui.sae_paths import local_saes, short_name


class CircuitSitesScreen(ModalScreen[list[str] | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="circuit_sites.close")]
    DEFAULT_CSS = """
    CircuitSitesScreen { align: center middle; }
    CircuitSitesScreen > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    CircuitSitesScreen Static { color: $text-muted; }
    CircuitSitesScreen #sites-error { color: $text-error; display: none; }
    CircuitSitesScreen #sites-error.-shown { display: block; }
    CircuitSitesScreen OptionList, CircuitSitesScreen OptionList:focus { height: auto; max-height: 8; border: none; }
    """

    def __init__(self, paths: list[str], engine: str | None = None) -> None:
        """`engine`: None for an engine on this machine, else where it runs (remote)."""
        super().__init__()
        self.paths, self.engine = paths, engine
        self.known = local_saes() if engine is None else []

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = "SAE sites, upstream first"
        box.border_subtitle = "enter uses them · esc keeps the old ones"
        with box:
            yield Input(format_sites(self.paths), id="sites-input")
            yield Static("", id="sites-error")
            if self.engine is not None:
                yield Static(f"Paths are the engine's ({self.engine}): absolute, or relative to its folder.")
            if self.known:
                yield Static("or add one under weights/saes at the end (tab, then ↑/↓ and enter):")
                yield OptionList(*(Option(short_name(p), id=p) for p in self.known), id="sites-known")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            paths = parse_sites(event.value, self.engine is None)
        except ValueError as e:
            error = self.query_one("#sites-error", Static)
            error.update(f"Cannot read the list: {e}")
            error.add_class("-shown")
            return
        self.dismiss(paths or None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        field = self.query_one(Input)
        field.value = (field.value.rstrip() + " " + format_sites([event.option.id])).lstrip()
        field.focus()
