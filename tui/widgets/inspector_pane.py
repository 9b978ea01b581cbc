"""The Inspector pane: pick an SAE and a feature and read its page, or type text
and see which features fire on it (the Live view, `v`).

A feature is picked by typing its number, stepping with ←/→ (or [ ]), a
neighbour's key (1-8), a search (`/`), the palette, or from another pane
(`show_feature`). Pages come from a client-side cache: after a page is shown,
the features around it and its neighbours are fetched in the background, so
stepping through them shows each at once.

Notes
- This file lays out and draws; `tui/controllers/inspector.py` owns the
  requests, the page cache and the history, and posts the messages handled here.
- The SAE is opened lazily, the first time the pane is shown or asked for a page,
  since opening may build an index (a minute for 1M tokens).
- `b` goes back through the features shown, like a browser.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher, Input, Label, Static, Tabs

from engine.protocol import FeaturePage as Page
from engine.protocol import LiveActs
from tui.controllers.inspector import (InspectorController, InspectorStatus, PageArrived, PageFailed,
                                       SaeOpenedNow)
from tui.link import EngineLink
from tui.sae_paths import default_downstream, short_name
from tui.sae_session import SaeSession
from tui.screens.feature_search import FeatureSearchScreen
from tui.widgets.feature_page import N_NEIGHBOURS, FeaturePage
from tui.widgets.live_view import LiveView
from tui.widgets.sae_field import SaeField


class InspectorPane(Vertical):
    BINDINGS = [
        Binding("right,right_square_bracket", "step(1)", "Next", id="inspect.next", key_display="→",
                tooltip="The next feature"),
        Binding("left,left_square_bracket", "step(-1)", "Prev", id="inspect.prev", show=False,
                tooltip="The previous feature"),
        *(Binding(str(i), f"neighbour({i})", f"Neighbour {i}", show=False,
                  group=Binding.Group("Jump to neighbour 1-8")) for i in range(1, N_NEIGHBOURS + 1)),
        Binding("g", "focus_number", "Go to", id="inspect.goto", tooltip="Type a feature number"),
        Binding("slash", "search", "Search", id="inspect.search",
                tooltip="Search: fires on text, boosts token, densest, dead"),
        Binding("v", "show_view('live')", "Live", id="inspect.live",
                tooltip="Live activations: type text, see the features that fire on each token"),
        Binding("v", "show_view('page')", "Page", id="inspect.page", tooltip="Back to the feature page"),
        Binding("b", "back", "Back", id="inspect.back", show=False, tooltip="Back to the previous feature"),
        Binding("s", "change_sae", "SAE", id="inspect.sae", show=False, tooltip="Open another SAE folder"),
        Binding("j", "scroll(1)", "Down", show=False, group=Binding.Group("Scroll the page")),
        Binding("k", "scroll(-1)", "Up", show=False, group=Binding.Group("Scroll the page")),
    ]
    DEFAULT_CSS = """
    InspectorPane { height: 1fr; }
    InspectorPane #inspect-bar { height: auto; padding: 0 1; }
    InspectorPane #inspect-bar Label { width: auto; color: $text-muted; }
    InspectorPane #inspect-feature { width: 7; }
    InspectorPane #inspect-status { width: 1fr; height: auto; max-height: 3; padding: 0 0 0 1; color: $text-muted; }
    InspectorPane #inspect-status.-error { color: $text-error; }
    InspectorPane ContentSwitcher { height: 1fr; }
    """

    def __init__(self, link: EngineLink, saes: SaeSession, sae_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.link = link
        self.control = InspectorController(link, saes, self.post_message)
        self.start_path = sae_path or default_downstream()

    def compose(self) -> ComposeResult:
        with Horizontal(id="inspect-bar"):
            yield Label("SAE ")
            yield SaeField(self.start_path, "The SAE to inspect", id="inspect-sae")
            yield Label(" feature ")
            yield Input("0", id="inspect-feature", type="integer", compact=True)
            yield Static("", id="inspect-status")
        with ContentSwitcher(initial="inspect-page"):
            yield FeaturePage(id="inspect-page")
            yield LiveView(self._live, id="inspect-live")

    def on_mount(self) -> None:
        self.page_view.show_message("Enter a feature number, or / to search. The SAE opens when this pane is first shown.")

    def on_unmount(self) -> None:
        self.control.close()

    # ---- parts ------------------------------------------------------------------------
    @property
    def page_view(self) -> FeaturePage:
        return self.query_one(FeaturePage)

    @property
    def sae_field(self) -> SaeField:
        return self.query_one(SaeField)

    @property
    def number_input(self) -> Input:
        return self.query_one("#inspect-feature", Input)

    @property
    def path(self) -> str:
        return self.sae_field.path

    @property
    def live_shown(self) -> bool:
        return self.query_one(ContentSwitcher).current == "inspect-live"

    @property
    def current(self) -> tuple[str, int] | None:
        return self.control.current

    @property
    def pages(self):
        return self.control.pages

    # ---- showing features -------------------------------------------------------------
    def on_show(self) -> None:
        if self.current is None:  # the first time: open the SAE and show a first page
            self.show_feature(int(self.number_input.value or 0))
        if not isinstance(self.app.focused, Tabs):  # someone walking the tabs with ←/→ stays there
            self.focus_content()

    def focus_content(self) -> None:
        if self.live_shown:
            self.query_one(LiveView).text_input.focus()
        else:
            self.page_view.body.focus()

    def show_feature(self, feature: int, path: str | None = None, remember: bool = True) -> None:
        path = path or self.path
        if not path:
            self._status("Type an SAE folder first.", error=True)
            return
        if path != self.sae_field.path:
            self.sae_field.set_path(path)
        if self.live_shown:
            self.action_show_view("page")
        page = self.control.want(path, feature, remember)
        if self.control.current == (path, feature):
            self.number_input.value = str(feature)
        if page is not None:
            self._draw(path, page)

    def on_sae_opened_now(self, message: SaeOpenedNow) -> None:
        self.query_one(LiveView).rerun()
        if not message.info.indexed:
            self._status(f"{short_name(message.path)} has no index", error=True)

    def on_page_arrived(self, message: PageArrived) -> None:
        self._draw(message.path, message.page)

    def on_inspector_status(self, message: InspectorStatus) -> None:
        self._status(message.text, error=message.error)

    def on_page_failed(self, message: PageFailed) -> None:
        if message.shown is not None and message.shown != self.sae_field.path:
            self.sae_field.set_path(message.shown)  # the header names the SAE the body shows
        if self.control.shown is not None:
            self.number_input.value = str(self.control.shown[1])
        self._status(message.error, error=True)
        self.app.notify(message.error, title=f"Feature {message.feature}", severity="error", timeout=8)

    def _draw(self, path: str, page: Page) -> None:
        info = self.control.saes.info(path)
        dead = (info.dead_fraction, info.dead_tokens) if info and info.dead_fraction is not None else None
        self.page_view.show(page, info.alive if info else None, dead)
        self._status("")
        self.control.shown_page(path, page)

    # ---- actions ------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("step", "neighbour", "scroll", "back"):
            return not self.live_shown
        if action == "show_view":
            return (parameters[0] == "page") == self.live_shown
        return True

    def action_step(self, step: int) -> None:
        if self.current is None:
            self.show_feature(int(self.number_input.value or 0))
            return
        self.show_feature(self.current[1] + step)

    def action_neighbour(self, n: int) -> None:
        page = self.page_view.page
        if page is None or n > len(page.neighbours):
            return
        self.show_feature(page.neighbours[n - 1].feature, path=self.current[0] if self.current else None)

    def action_back(self) -> None:
        if (back := self.control.back()) is not None:
            self.show_feature(back[1], path=back[0], remember=False)

    def action_scroll(self, step: int) -> None:
        body = self.page_view.body
        body.scroll_to(y=body.scroll_y + step, animate=False)

    def action_focus_number(self) -> None:
        self.number_input.focus()

    def action_change_sae(self) -> None:
        self.sae_field.action_edit()

    def action_show_view(self, which: str) -> None:
        self.query_one(ContentSwitcher).current = f"inspect-{which}"
        self.focus_content()
        self.refresh_bindings()

    def action_search(self, kind: str = "text") -> None:
        path = self.path

        def chosen(feature: int | None) -> None:
            if feature is not None:
                self.show_feature(feature, path=path)
                self.focus_content()

        self.app.push_screen(FeatureSearchScreen(lambda k, q: self._search(path, k, q), kind, short_name(path)),
                             chosen)

    async def _search(self, path: str, kind: str, query: str):
        return await self.control.search(path, kind, query)

    async def _live(self, text: str) -> LiveActs:
        return await self.control.live(self.path, text)

    # ---- input ------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "inspect-feature":
            event.stop()
            try:
                feature = int(event.value)
            except ValueError:
                self._status("A feature is a number.", error=True)
                return
            self.show_feature(feature)
            self.page_view.body.focus()

    def on_sae_field_changed(self, message: SaeField.Changed) -> None:
        message.stop()
        self.show_feature(int(self.number_input.value or 0), message.path)
        self.focus_content()

    def on_live_view_pick(self, message: LiveView.Pick) -> None:
        message.stop()
        self.show_feature(message.feature)
        self.focus_content()

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#inspect-status", Static)
        status.update(Text(text, overflow="fold"))  # an error is read in full
        status.set_class(error, "-error")
