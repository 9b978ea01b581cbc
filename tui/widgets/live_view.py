"""Live activations: type text and see which features fire on it, strongest first,
and for a chosen token the features that fire most there (`feature.live`).

Enter on a feature in either list posts `Pick`, which the Inspector turns into
that feature's page.

Notes
- The request goes out 0.3 s after the last keystroke (or at once on Enter), in
  an exclusive worker: a newer text cancels the older request, in the engine too.
- Highlighting a feature in the strongest list moves the token cursor to where it
  peaks, so the right-hand list shows what else fires there.
- The view does not know the engine: the pane gives it `fetch(text)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from engine.protocol import LiveActs
from tui.client import EngineError
from tui.text import visible_token
from tui.widgets.token_cursor import TokenCursor

DEBOUNCE = 0.3


class LiveView(Vertical):
    BINDINGS = [
        Binding("ctrl+t", "focus_text", "Text", id="live.focus_text", tooltip="Type the text to run"),
        Binding("escape", "leave_text", "Lists", id="live.leave_text",
                tooltip="Leave the text for the feature lists"),
    ]
    DEFAULT_CSS = """
    LiveView { height: 1fr; }
    LiveView #live-text { margin: 0 1; }
    LiveView #live-info { height: 1; padding: 0 1; color: $text-muted; }
    LiveView #live-info.-error { color: $text-error; }
    LiveView #live-lists { height: 1fr; }
    LiveView OptionList { width: 1fr; height: 1fr; border: round $panel; }
    LiveView OptionList:focus { border: round $primary; }
    """

    @dataclass
    class Pick(Message):
        feature: int

    @dataclass
    class Result(Message):
        text: str
        result: LiveActs

    @dataclass
    class Failed(Message):
        text: str
        error: str

    def __init__(self, fetch: Callable[[str], Awaitable[LiveActs]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.fetch = fetch
        self.result: LiveActs | None = None
        self.result_text = ""  # the text `result` is for
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Type text: which features fire on each token", id="live-text", compact=True)
        yield TokenCursor(hint="(its tokens appear here; ←/→ choose one)", id="live-tokens")
        yield Static("", id="live-info")
        with Horizontal(id="live-lists"):
            strongest = OptionList(id="live-strongest")
            strongest.border_title = "strongest"
            yield strongest
            at = OptionList(id="live-at")
            at.border_title = "at the token"
            yield at

    @property
    def text_input(self) -> Input:
        return self.query_one("#live-text", Input)

    def action_focus_text(self) -> None:
        self.text_input.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_text":
            return self.text_input.has_focus
        return True

    def action_leave_text(self) -> None:
        self.query_one("#live-strongest", OptionList).focus()

    # ---- asking ---------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE, self.run_now)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.run_now()
        if self.result is not None:
            self.query_one("#live-strongest", OptionList).focus()

    def run_now(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        text = self.text_input.value
        if not text.strip():
            return
        if self.result is not None and self.result_text == text:
            return
        self._info("running…")
        self.run_worker(self._run(text), group="live", exclusive=True, exit_on_error=False)

    async def _run(self, text: str) -> None:
        try:
            result = await self.fetch(text)
        except EngineError as e:
            self.post_message(self.Failed(text, str(e)))
        else:
            self.post_message(self.Result(text, result))

    def rerun(self) -> None:
        """Ask again (another SAE was opened)."""
        self.result = None
        self.run_now()

    # ---- showing --------------------------------------------------------------------
    def on_live_view_result(self, message: Result) -> None:
        self.result, self.result_text = message.result, message.text
        r = message.result
        self.query_one(TokenCursor).show(r.tokens)
        strongest = self.query_one("#live-strongest", OptionList)
        strongest.clear_options()
        for s in r.strongest:
            token = visible_token(r.tokens[s.position]) if 0 <= s.position < len(r.tokens) else "?"
            strongest.add_option(Option(Text.assemble((f"#{s.feature:<5}", "bold"), f" {s.max:5.2f}",
                                                      (f"  at {token}", "dim")), id=str(s.feature)))
        if r.strongest:
            strongest.highlighted = 0
        self._show_token(len(r.tokens) - 1)
        n = len(r.strongest)
        self._info(f"{len(r.tokens)} tokens · {n} strongest features · Enter opens one · ←/→ on the tokens")

    def on_live_view_failed(self, message: Failed) -> None:
        self._info(message.error, error=True)

    def on_token_cursor_moved(self, message: TokenCursor.Moved) -> None:
        message.stop()
        self._show_token(message.index)

    def on_token_cursor_chosen(self, message: TokenCursor.Chosen) -> None:
        message.stop()
        self.query_one("#live-at", OptionList).focus()

    def _show_token(self, index: int) -> None:
        if self.result is None or not self.result.per_token:
            return
        rows = self.result.per_token
        index = max(0, min(index, len(rows) - 1))
        row = rows[index]
        at = self.query_one("#live-at", OptionList)
        at.border_title = f"at {visible_token(row.token)} (token {row.position})"
        at.clear_options()
        for f in row.features:
            at.add_option(Option(Text.assemble((f"#{f.feature:<5}", "bold"), f" {f.act:5.2f}"),
                                 id=str(f.feature)))
        if not row.features:
            at.add_option(Option(Text("no feature fires here", style="dim"), disabled=True))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if event.option_list.id == "live-strongest" and self.result is not None:
            s = self.result.strongest[event.option_index]
            cursor = self.query_one(TokenCursor)
            if cursor.index != s.position:
                cursor.show(self.result.tokens, s.position)
                self._show_token(s.position)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Pick(int(event.option.id)))

    def _info(self, text: str, error: bool = False) -> None:
        info = self.query_one("#live-info", Static)
        info.update(Text(text))
        info.set_class(error, "-error")
