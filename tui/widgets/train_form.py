"""The form that starts a training run: model, hook, architectures (tick several to
train them side by side from one model pass), width, sparsity, length and the rest.

Enter in any field (or the Start button) posts `Submitted` with the raw text; the
pane's controller parses it (`tui.train_settings.parse_settings`, `plan`) and
reports what is wrong.

Notes
- Compact inputs (one row each, several per line), so the whole form fits in the
  dozen rows an 80x24 terminal leaves under the runs table.
- The hook list comes from the loaded model (`model.info`'s `hooks`); until then
  it holds the default hook only.
- Checkboxes take space and Enter themselves; Enter starts from the text fields.
- `ranks`: data-parallel processes on the engine's machine (1 to 64; the batch is
  the global batch, split over them). Not a run setting but the job's: it sits
  beside the batch it splits, and `s` resuming a stopped run uses its value too.
- `snap every`: steps between decoder snapshots (feature emergence); empty is
  the engine's automatic choice (about 24 a run), -1 none.
- Every field starts with the engine's default (`engine.protocol.TrainSettings`;
  ranks: `TrainStartParams`), read through `tui.train_settings.form_default`;
  nothing is repeated here.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, Select

from tui.train_settings import RANKS_FIELD, form_default
from tui.training import ARCHITECTURES, DEFAULT_HOOK

# Rows of (field, label, width in cells or 0 for the rest of the line).
ROWS = (
    (("d_sae", "d_sae", 7), ("k", "k", 5), ("l1", "l1", 6), ("seed", "seed", 4), ("context", "ctx", 5)),
    (("tokens", "tokens", 7), ("batch_size", "batch", 6), ("ranks", "ranks", 2),
     ("checkpoint_every", "ckpt", 5), ("eval_tokens", "eval tok", 7)),
)
SNAPSHOT_FIELD = ("snapshot_every", "snap every", 4)  # on the out line: the number rows are full at 80 columns
TEXT_FIELDS = ("model", *(name for row in ROWS for name, _, _ in row), "out", SNAPSHOT_FIELD[0])


class TrainForm(VerticalScroll):
    DEFAULT_CSS = """
    TrainForm { height: 1fr; padding: 0 1; }
    TrainForm > Horizontal { height: 1; margin-bottom: 1; }
    TrainForm Label { width: auto; padding: 0 1 0 0; color: $text-muted; }
    TrainForm Label.-gap { padding: 0 1 0 2; }
    TrainForm Input { width: 1fr; }
    TrainForm Select { width: 2fr; }
    TrainForm Checkbox { width: auto; margin-right: 2; }
    TrainForm #f-out { width: 1fr; }
    TrainForm .hint { color: $text-muted; width: 1fr; padding-left: 2; }
    """

    @dataclass
    class Submitted(Message):
        values: dict[str, str]
        """Text of each field (model, hook, d_sae, k, l1, seed, tokens, ...)."""
        archs: list[str]
        out: str

    def __init__(self, model: str = "default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label("model")
            yield Input(self.model, id="f-model", compact=True)
            yield Label("hook", classes="-gap")
            yield Select([(DEFAULT_HOOK, DEFAULT_HOOK)], value=DEFAULT_HOOK, allow_blank=False,
                         id="f-hook", compact=True)
        with Horizontal():
            yield Label("arch")
            for arch in ARCHITECTURES:
                yield Checkbox(arch, arch == "topk", id=f"f-arch-{arch}", compact=True)
        for row in ROWS:
            with Horizontal():
                for i, (name, label, width) in enumerate(row):
                    yield Label(label, classes="-gap" if i else "")
                    # an empty field keeps the engine's default (context: the model's, at most 256;
                    # ranks: one)
                    field = Input(form_default(name), placeholder="1" if name == RANKS_FIELD else "auto",
                                  id=f"f-{name}", compact=True)
                    field.styles.width = width + 2
                    yield field
        with Horizontal():
            yield Label("out")
            yield Input(placeholder="empty: runs/<arch>-<hook>-<n>; several: <out>/<arch>",
                        id="f-out", compact=True)
            name, label, width = SNAPSHOT_FIELD
            yield Label(label, classes="-gap")
            # empty: about 24 decoder snapshots a run (for emergence); -1: none
            field = Input(form_default(name), placeholder="auto", id=f"f-{name}", compact=True)
            field.styles.width = width + 2
            yield field
        with Horizontal():
            yield Button("Start", id="f-start", variant="primary", compact=True)
            yield Label("enter starts · tab moves · esc back", classes="hint")

    def focus_first(self) -> None:
        self.query_one("#f-d_sae", Input).focus()

    def set_hooks(self, hooks: list[str]) -> None:
        select = self.query_one("#f-hook", Select)
        current = select.value
        names = list(hooks) or [DEFAULT_HOOK]
        select.set_options([(h, h) for h in names])
        select.value = current if current in names else (DEFAULT_HOOK if DEFAULT_HOOK in names else names[0])

    def fill(self, archs: list[str] | None = None, **values: object) -> None:
        """Set fields (as `fill(d_sae=32, tokens="2k", archs=["topk"])`); for tests and presets."""
        for name, value in values.items():
            if name == "hook":
                self.query_one("#f-hook", Select).value = str(value)
            else:
                self.query_one(f"#f-{name}", Input).value = str(value)
        if archs is not None:
            for arch in ARCHITECTURES:
                self.query_one(f"#f-arch-{arch}", Checkbox).value = arch in archs

    def values(self) -> dict[str, str]:
        out = {name: self.query_one(f"#f-{name}", Input).value for name in TEXT_FIELDS if name != "out"}
        out["hook"] = str(self.query_one("#f-hook", Select).value)
        return out

    def ranks(self) -> str:
        """The ranks field's text (a resume uses it too)."""
        return self.query_one(f"#f-{RANKS_FIELD}", Input).value

    def archs(self) -> list[str]:
        return [a for a in ARCHITECTURES if self.query_one(f"#f-arch-{a}", Checkbox).value]

    def submit(self) -> None:
        self.post_message(self.Submitted(self.values(), self.archs(), self.query_one("#f-out", Input).value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.submit()
