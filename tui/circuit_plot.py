"""The Circuit pane's plot: faithfulness and completeness of the swept circuits against
their node count (log x), with error nodes and without, and a vertical marker at the
circuit shown. plotext, drawn as ANSI text at a given size (see `tui.plots`).

Notes
- A log x axis is drawn as log10 of the node counts on a linear axis, labelled with
  the counts (as `tui.plots` does for log y).
- The y range always holds 0 and 1 (none and all of the model's behaviour), and
  more where a circuit overshoots: the engine's numbers are drawn as they are.
- The legend is a rich line of its own (`legend`), in the curves' colours; a title
  row inside the plot would cost a row of a small pane.
"""

from __future__ import annotations

import math

import plotext as plt
from rich.text import Text

from engine.protocol import CurvePoint
from tui.plots import MIN_HEIGHT, MIN_WIDTH, _placeholder, log_ticks, nice_ticks, tick_labels

plt.terminal.limit(False, False)

# (what, colour): 256-colour codes; the features-only curves are the paler twins
FAITHFULNESS, COMPLETENESS = 39, 208
FAITHFULNESS_FEATURES, COMPLETENESS_FEATURES = 153, 223
MARKER = 226


def legend(errors: bool) -> Text:
    """`faithfulness ━ ε ━ features   completeness ━ ε ━ features   ┊ shown` in the
    curves' colours; the pair the circuit shown is on (`errors`: with error nodes) bold."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for name, with_errors, features_only in (("faithfulness", FAITHFULNESS, FAITHFULNESS_FEATURES),
                                             ("completeness", COMPLETENESS, COMPLETENESS_FEATURES)):
        text.append(name + " ")
        text.append("━ ", style=f"color({with_errors})")
        text.append("ε ", style="bold" if errors else "dim")
        text.append("━ ", style=f"color({features_only})")
        text.append("features", style="dim" if errors else "bold")
        text.append("   ")
    text.append("┊ shown", style=f"color({MARKER})")
    return text


def curve_plot(curve: list[CurvePoint], curve_features: list[CurvePoint], shown_nodes: int | None,
               width: int, height: int) -> str:
    """The four curves against node count, and a marker at `shown_nodes` (None: none)."""
    series = []
    for points, key, colour in ((curve, "faithfulness", FAITHFULNESS), (curve, "completeness", COMPLETENESS),
                                (curve_features, "faithfulness", FAITHFULNESS_FEATURES),
                                (curve_features, "completeness", COMPLETENESS_FEATURES)):
        kept = sorted((p.nodes, getattr(p, key)) for p in points if p.nodes > 0 and math.isfinite(getattr(p, key)))
        if kept:
            series.append(([math.log10(n) for n, _ in kept], [y for _, y in kept], colour))
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
