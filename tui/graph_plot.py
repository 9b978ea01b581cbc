"""The Graph pane's plot: the degree distribution of an SAE's co-activation graph (the
fraction of its nodes with each degree, log y), and a second SAE's over it when the
two are compared. plotext, drawn as ANSI text at a given size (`tui.plots.curves`).

Notes
- Fractions, not counts: two SAEs with different numbers of live features are
  drawn on one scale, as the engine's JSD compares them.
- Degrees no node has are left out (a log axis cannot show 0), never faked, so a
  sparse tail is drawn between the degrees that occur.
- The legend is a rich line of its own (`legend`), in the series' colours.
"""

from __future__ import annotations

from rich.text import Text

from tui.graph_text import SAE_A, SAE_B
from tui.plots import Series, curves

TITLE = "nodes by degree (fraction, log)"


def fractions(counts: list[int]) -> tuple[list[float], list[float]]:
    """(degrees, fraction of nodes) from `degree_counts` (nodes of degree 0, 1, 2, ...)."""
    total = sum(counts)
    if total <= 0:
        return [], []
    return [float(d) for d in range(len(counts))], [c / total for c in counts]


def degree_plot(counts: list[int], other: list[int] | None, width: int, height: int) -> str:
    """One SAE's degree distribution, and `other`'s over it (None: just the one)."""
    series = [Series(*fractions(counts), SAE_A)]
    if other is not None:
        series.append(Series(*fractions(other), SAE_B))
    return curves(series, width, height, TITLE, log_y=True)


def legend(name: str, other: str | None) -> Text:
    """`━ mlp_out-topk  ━ mlp_out-topk-s1` in the series' colours."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("━ ", style=f"color({SAE_A})")
    text.append(name)
    if other is not None:
        text.append(" ━ ", style=f"color({SAE_B})")
        text.append(other)
    return text
