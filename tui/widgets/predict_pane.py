"""The Predict pane: type a prompt, see its tokens and the model's top next tokens.

Enter in the prompt sends `predict`; Enter on a top token appends it to the prompt
and predicts again. Results stay on screen when the engine dies.

Notes
- The request runs in an exclusive worker: a new prompt cancels the previous
  request (in the engine too), so only the latest answer is shown.
- Results come back as messages (`Predicted`, `Failed`), handled on the UI side.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.message import Message
from textual.widgets import Static

from engine.protocol import Prediction
from tui.client import EngineError
from tui.link import EngineLink
from tui.widgets.prompt_input import PromptInput
from tui.widgets.token_chips import TokenChips
from tui.widgets.top_tokens import TopTokensTable

TOP = 10


class PredictPane(Vertical):
    BINDINGS = [
        Binding("slash,i", "focus_prompt", "Prompt", id="predict.focus_prompt",
                tooltip="Move the cursor to the prompt"),
    ]
    DEFAULT_CSS = """
    PredictPane { height: 1fr; }
    PredictPane #predict-info { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    PredictPane #predict-info.-error { color: $text-error; }
    """

    @dataclass
    class Predicted(Message):
        text: str
        result: Prediction

    @dataclass
    class Failed(Message):
        text: str
        error: str

    def __init__(self, link: EngineLink, **kwargs) -> None:
        super().__init__(**kwargs)
        self.link = link
        self.result: Prediction | None = None

    def compose(self) -> ComposeResult:
        prompt = PromptInput(placeholder="Type a prompt, press Enter", id="prompt")
        prompt.border_title = "prompt"
        yield prompt
        yield TokenChips(id="chips")
        yield Static("", id="predict-info")
        yield TopTokensTable(id="top")

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "focus_prompt":
            return not self.prompt.has_focus  # no footer entry while typing in it
        return True

    def action_focus_prompt(self) -> None:
        self.prompt.focus()

    def focus_content(self) -> None:
        """Where the pane's key (F2) puts the user: the prompt."""
        self.prompt.focus()

    def on_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.predict()

    def on_top_tokens_table_chosen(self, event: TopTokensTable.Chosen) -> None:
        self.prompt.value += event.token
        self.predict()

    def predict(self, text: str | None = None) -> None:
        text = self.prompt.value if text is None else text
        if not text.strip():
            self._info("Type a prompt first.", error=True)
            return
        waiting = "waiting for the model to load…" if self.link.model_loading else "predicting…"
        self._info(waiting)
        self.run_worker(self._predict(text), group="predict", exclusive=True, exit_on_error=False)

    async def _predict(self, text: str) -> None:
        try:
            result = await self.link.run("predict", {"text": text, "top": TOP}, needs_model=True)
        except EngineError as e:
            self.post_message(self.Failed(text, str(e)))
        else:
            self.post_message(self.Predicted(text, result))

    def on_predict_pane_predicted(self, message: Predicted) -> None:
        self.result = message.result
        r = message.result
        self.query_one(TokenChips).show(r.tokens)
        self.query_one(TopTokensTable).show(r.top)
        self._info(f"{r.model} · {len(r.tokens)} tokens · entropy {r.entropy:.2f} nats")

    def on_predict_pane_failed(self, message: Failed) -> None:
        self._info(message.error, error=True)

    def _info(self, text: str, error: bool = False) -> None:
        info = self.query_one("#predict-info", Static)
        info.update(escape(text))
        info.set_class(error, "-error")
