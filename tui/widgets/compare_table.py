"""The shown runs (● in the runs table) side by side, one column each, with their
settings and final evaluation (the `train.start` result, or the `eval.json` of a
reopened folder): explained variance, L0, MSE, dead fraction, CE loss score, KL
divergence score, and the CE loss with the SAE spliced in.

Notes
- Runs are columns (a narrow terminal shows the first few and scrolls sideways);
  rows are the settings that tell runs apart, then the metrics.
- A run that has not finished shows its state in place of the metrics.
- Small enough to refill whole on every change.
- Two emergence rows under them (`train.emergence`, asked while this view is shown):
  the training tokens by which half the features had formed, and the fraction of
  features that had fired by the last snapshot; read off the engine's points, marked
  `~` while the run trains (matched to its latest snapshot, not the final decoder).
- Row labels are `engine.figures`'s short names, their rules in the table's tooltip;
  "dead" is the final evaluation's: never fired on the first `DEAD_TOKENS` held-out
  tokens. A dead fraction measured on fewer tokens (an older or shorter evaluation)
  shows its window beside it.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from engine.figures import FIGURES, dead_label, rule
from engine.protocol import RunEval
from tui.training import FINAL_METRICS, Run, fmt, formed_by, tokens_label

LABEL_WIDTH = 11
SETTINGS_KEYS = {"arch", "d_sae", "sparsity", "tokens"}
EMERGENCE_ROWS = (("formed_half", "50% formed"), ("fired", "ever fired"))
# Rows: (key, label); the settings first, then the final metrics, then emergence.
ROWS = (("arch", "arch"), ("d_sae", "d_sae"), ("sparsity", "k / l1"), ("tokens", "tokens"),
        *((key, FIGURES[key][0] if key in FIGURES else label) for key, label, _ in FINAL_METRICS),
        *EMERGENCE_ROWS)
TOOLTIP = "\n".join(rule(key) for key, _, _ in FINAL_METRICS if key in FIGURES) + (
    "\n50% formed: training tokens at the first decoder snapshot by which half the features had"
    " formed (their direction within the emergence cosine of the final decoder's from then on)"
    "\never fired: the fraction of features that had fired by the last snapshot"
    "\n~: the run is training; matched to its latest snapshot")


def dead_cell(final: RunEval) -> str:
    """The final dead fraction; with its window when not the rule's `DEAD_TOKENS`
    (files written before `dead_tokens` was recorded: the evaluation's `tokens`)."""
    text = fmt(final.dead_fraction, "pct")
    label = dead_label(final.dead_tokens if final.dead_tokens is not None else final.tokens or None,
                       final.dead_context)
    return text if label == "dead" else f"{text} ({label[len('dead in '):]})"


def column(run: Run) -> dict[str, Text]:
    """Every row's cell for one run (tests compare these with `eval.json`)."""
    c = run.config
    k, l1 = f"k {c.k}", f"l1 {c.l1}"
    sparse = {"topk": k, "batchtopk": k, "relu": l1}.get(run.arch, f"{k}, {l1}")  # jumprelu: both
    cells = {"arch": run.arch, "d_sae": fmt(c.d_sae, "int"), "sparsity": sparse, "tokens": tokens_label(c.tokens)}
    for i, (key, _, value) in enumerate(FINAL_METRICS):
        if run.final is None:
            cells[key] = run.state if i == 0 else ""
        else:
            cells[key] = dead_cell(run.final) if key == "dead_fraction" else fmt(value(run.final), "num")
    cells.update(emergence_cells(run))
    return {k: Text(v, justify="right") for k, v in cells.items()}


def emergence_cells(run: Run) -> dict[str, str]:
    """The emergence rows of one run: read off the engine's `Emergence` points."""
    em = run.emergence
    if em is None or not em.points:
        return {key: "–" for key, _ in EMERGENCE_ROWS}
    mark = "~" if em.reference == "latest" else ""
    half = formed_by(em)
    return {"formed_half": "–" if half is None else mark + tokens_label(half),
            "fired": mark + fmt(em.points[-1].fired, "pct")}


class CompareTable(DataTable):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, group=Binding.Group("Move down / up")),
        Binding("k", "cursor_up", "Up", show=False, group=Binding.Group("Move down / up")),
    ]
    DEFAULT_CSS = """
    CompareTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._runs: list[Run] = []
        self.tooltip = TOOLTIP

    def on_mount(self) -> None:
        self.show([])

    def show(self, runs: list[Run]) -> None:
        self._runs = list(runs)
        row = self.cursor_row
        self.clear(columns=True)
        self.add_column("", width=LABEL_WIDTH, key="label")
        columns = [column(r) for r in runs]
        for run, cells in zip(runs, columns):  # as wide as its name and cells, within limits
            width = min(max(len(run.name), *(c.cell_len for c in cells.values()), 8), 24)
            self.add_column(Text(run.name[:width], style=Style(color=f"color({run.colour})", bold=True),
                                 justify="right"), width=width, key=run.out)
        for key, label in ROWS:
            self.add_row(Text(label, style="dim" if key in SETTINGS_KEYS else "bold"),
                         *(c[key] for c in columns), key=key)
        self.move_cursor(row=min(max(row, 0), len(ROWS) - 1), animate=False)
