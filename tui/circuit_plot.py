"""The Circuit pane's plot: the faithfulness of each method's swept circuits
(attribution, integrated gradients, the mask's lambda grid) against their node count
(log x), side by side in one frame, for the errors setting of the circuit shown, and
a vertical marker at that circuit. plotext, drawn as ANSI text at a given size (see
`tui.plots`).

Notes
- A log x axis is drawn as log10 of the node counts on a linear axis, labelled with
  the counts (as `tui.plots` does for log y).
- The y range always holds 0 and 1 (none and all of the model's behaviour), and
  more where a circuit overshoots: the engine's numbers are drawn as they are.
- Node counts are each method's own: a mask circuit's nodes are (position,
  latent) pairs, the others' features summed over positions unless per position;
  the axis says how big a circuit each needed, the legend which is which.
- The legend is a rich line of its own (`legend`), in the curves' colours; a title
  row inside the plot would cost a row of a small pane.
"""

from __future__ import annotations

import math

import plotext as plt
from rich.text import Text

from engine.protocol import CurvePoint
from tui.circuit_methods import LABELS, METHODS
from tui.plots import MIN_HEIGHT, MIN_WIDTH, _placeholder, log_ticks, nice_ticks, tick_labels

plt.terminal.limit(False, False)

# 256-colour codes, one per method, apart in hue
COLOURS = {"attribution": 39, "ig": 208, "mask": 170}
MARKER = 226


def legend(errors: bool, drawn: set[str] | frozenset[str] = frozenset(), shown: str | None = None) -> Text:
    """`faithfulness, with ε: ━ attribution ━ IG ━ mask   ┊ shown` in the curves'
    colours: a method without a curve yet dim, with a dotted bar; the method of the
    circuit shown bold. `errors`: the curves with error nodes (a mask's error terms
    clean), else features only (a mask's error terms at their means)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("faithfulness, " + ("with ε" if errors else "features only") + ":", style="dim")
    for method in METHODS:
        there = method in drawn
        text.append("  ")
        text.append("━ " if there else "╌ ", style=f"color({COLOURS[method]})" if there else "dim")
        text.append(LABELS[method], style="bold" if method == shown else "" if there else "dim")
    text.append("   ┊ shown", style=f"color({MARKER})")
    return text


def curve_plot(curves: dict[str, list[CurvePoint]], shown_nodes: int | None, width: int, height: int) -> str:
    """Each method's faithfulness curve against node count (`curves`: method -> its
    points), and a marker at `shown_nodes` (None: none)."""
    series = []
    for method, points in curves.items():
        kept = sorted((p.nodes, p.faithfulness) for p in points if p.nodes > 0 and math.isfinite(p.faithfulness))
        if kept:
            series.append(([math.log10(n) for n, _ in kept], [y for _, y in kept], COLOURS.get(method, 250)))
    if width < MIN_WIDTH or height < MIN_HEIGHT or not series:
        return _placeholder(width, height, "", "no sweep: no curve to draw" if height >= 2 else "")
    ys = [y for _, s, _ in series for y in s]
    y_lo, y_hi = min(0.0, min(ys)), max(1.0, max(ys))
    x_lo = min(min(xs) for xs, _, _ in series)
    x_hi = max(max(xs) for xs, _, _ in series)
    if shown_nodes:
        x_lo, x_hi = min(x_lo, math.log10(shown_nodes)), max(x_hi, math.log10(shown_nodes))
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(width, height)
    for xs, ys_, colour in series:
        sig = f.signal(xs, ys_, marker=plt.marker("braille", pixel=plt.pixel(foreground=colour)))
        sig.lines()
        f.draw(sig)
    if shown_nodes:  # drawn last, over the curves
        x = math.log10(shown_nodes)
        f.draw(f.segment([x, x], [y_lo, y_hi], marker=plt.marker("braille", pixel=plt.pixel(foreground=MARKER))))
    rows = height - 2  # less the frame and the x labels
    y_ticks = nice_ticks(y_lo, y_hi, 3, min_step=1.5 * (y_hi - y_lo) / max(1, rows - 1))
    f.ruler("y").lim(y_lo, y_hi)
    f.ruler("y").ticks(y_ticks, tick_labels(y_ticks))
    counts = log_ticks(10 ** x_lo, 10 ** x_hi, max(2, width // 8))
    f.ruler("x").lim(x_lo, x_hi)
    f.ruler("x").ticks([math.log10(c) for c in counts], [f"{c:g}" for c in counts])
    return f.build().string().rstrip("\n")
