"""Search features (`/` in the Inspector, or the palette): those that fire on a
text, that boost a token, the densest, the dead. Enter on a result dismisses the
screen with that feature's number; Escape with None.

Notes
- The four kinds are tabs (ctrl+t steps through them, also while typing); densest
  and dead need no query, so they run as soon as their tab is chosen. Text and token run on Enter in the query line.
- The screen does not know the engine: it is given `search(kind, query)`, which
  returns the `results` of `feature.search`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static, Tab, Tabs
from textual.widgets.option_list import Option

from engine.protocol import SearchHit
from tui.client import EngineError

KINDS = {"text": "fires on text", "token": "boosts token", "densest": "densest", "dead": "dead"}
PLACEHOLDERS = {"text": "Text; Enter finds the features that fire most on it",
                "token": "One token, e.g. ' self'; Enter finds the features whose logit effect boosts it"}

Search = Callable[[str, str], Awaitable[list[SearchHit]]]


def result_text(kind: str, r: SearchHit) -> Text:
    """One hit: the feature, what the search measured, and its description (its top tokens)."""
    text = Text.assemble((f"#{r.feature:<6}", "bold"))
    if r.max is not None:
        text.append(f" max {r.max:.2f}")
    if r.value is not None:
        text.append(f" logit effect {r.value:+.3f}")
    if r.density is not None and kind != "dead":
        text.append(f" density {r.density:.2%}")
    if r.description:
        text.append(f"  {r.description}", style="italic")
    return text


class FeatureSearchScreen(ModalScreen[int | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="search.close"),
        Binding("ctrl+t", "kind(1)", "Next kind", id="search.kind", tooltip="Next kind of search"),
    ]
    DEFAULT_CSS = """
    FeatureSearchScreen { align: center middle; }
    FeatureSearchScreen > Vertical {
        width: 72; max-width: 100%; height: 20; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    FeatureSearchScreen #search-query { margin: 1 0 0 0; }
    FeatureSearchScreen #search-info { height: 1; color: $text-muted; }
    FeatureSearchScreen #search-info.-error { color: $text-error; }
    FeatureSearchScreen OptionList, FeatureSearchScreen OptionList:focus { height: 1fr; border: none; }
    """

    @dataclass
    class Found(Message):
        kind: str
        query: str
        results: list[SearchHit]

    @dataclass
    class Failed(Message):
        error: str

    def __init__(self, search: Search, kind: str = "text", sae_name: str = "") -> None:
        super().__init__()
        self.search, self.kind, self.sae_name = search, kind, sae_name
        self.results: list[SearchHit] | None = None

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = f"search features of {self.sae_name}" if self.sae_name else "search features"
        box.border_subtitle = "ctrl+t: next kind · tab moves · esc closes"
        with box:
            yield Tabs(*(Tab(label, id=kind) for kind, label in KINDS.items()), active=self.kind, id="search-kind")
            yield Input(id="search-query", compact=True)
            yield Static("", id="search-info")
            yield OptionList(id="search-results")

    def on_mount(self) -> None:
        self._kind_changed()

    def action_kind(self, step: int) -> None:
        kinds = list(KINDS)
        self.query_one(Tabs).active = kinds[(kinds.index(self.kind) + step) % len(kinds)]

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab is not None and event.tab.id != self.kind:
            self.kind = event.tab.id
            self._kind_changed()

    def _kind_changed(self) -> None:
        query = self.query_one("#search-query", Input)
        needs_query = self.kind in PLACEHOLDERS
        query.display = needs_query
        query.placeholder = PLACEHOLDERS.get(self.kind, "")
        self.query_one(OptionList).clear_options()
        if needs_query:
            query.focus()
            self._info("")
        else:
            self.run_search("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.run_search(event.value)

    def run_search(self, query: str) -> None:
        self._info("searching…")
        self.run_worker(self._search(self.kind, query), group="search", exclusive=True, exit_on_error=False)

    async def _search(self, kind: str, query: str) -> None:
        try:
            results = await self.search(kind, query)
        except EngineError as e:
            self.post_message(self.Failed(str(e)))
        else:
            self.post_message(self.Found(kind, query, results))

    def on_feature_search_screen_found(self, message: Found) -> None:
        if message.kind != self.kind:
            return
        self.results = message.results
        options = self.query_one(OptionList)
        options.clear_options()
        for r in message.results:
            options.add_option(Option(result_text(message.kind, r), id=str(r.feature)))
        self._info(f"{len(message.results)} features · Enter opens one" if message.results else "no features found")
        if message.results:
            options.highlighted = 0
            options.focus()

    def on_feature_search_screen_failed(self, message: Failed) -> None:
        self._info(message.error, error=True)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(int(event.option.id))

    def _info(self, text: str, error: bool = False) -> None:
        info = self.query_one("#search-info", Static)
        info.update(Text(text))
        info.set_class(error, "-error")
