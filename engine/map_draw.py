"""The feature map drawn as terminal text, shared by `saescope map` (engine/render_map.py)
and the app's map screen (tui/screens/feature_map.py): torch-free (rich and plotext
only), so the TUI may import it.

Notes
- The colour bins are the engine's (`FeatureMap.colorings`); this only paints them.
- The most populous bin is drawn first, so the rare ones (near-dead features, the
  last to emerge) stay visible on top; features without a value are grey, under all.
"""

from __future__ import annotations

import plotext as plt
from rich.text import Text

from engine.protocol import FeatureMap, MapColoring

RAMP = (27, 33, 39, 45, 50, 83, 118, 154, 190, 226, 220, 214, 208, 202, 196)  # 256-colour codes, cold to hot
GREY = 244
CENTRE = 231  # cluster numbers, white


def bin_colours(n: int) -> list[int]:
    """`n` colours spread evenly over `RAMP`, cold (low) to hot (high)."""
    if n <= 1:
        return [RAMP[len(RAMP) // 2]] * n
    return [RAMP[round(i * (len(RAMP) - 1) / (n - 1))] for i in range(n)]


def legend(coloring: MapColoring | None) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if coloring is None:
        return text.append("not coloured: the SAE folder has no sparsity.safetensors", style="dim")
    text.append(coloring.title + ": ")
    for label, colour in zip(coloring.labels, bin_colours(len(coloring.labels))):
        text.append("● ", style=f"color({colour})").append(label + "  ")
    if -1 in coloring.bin:
        text.append("● ", style=f"color({GREY})").append("none")
    return text


def scatter(fmap: FeatureMap, coloring: MapColoring | None, width: int, height: int) -> str:
    """The points, coloured by `coloring`'s bins, with each cluster's number at its
    centre, as ANSI text of `width` x `height` (the caller sets the size)."""
    plt.terminal.limit(False, False)
    groups: dict[int, tuple[list[float], list[float]]] = {}
    bins = coloring.bin if coloring is not None else [-1] * len(fmap.x)
    for x, y, b in zip(fmap.x, fmap.y, bins):
        xs, ys = groups.setdefault(b, ([], []))
        xs.append(x)
        ys.append(y)
    colours = bin_colours(len(coloring.labels)) if coloring is not None else []
    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(width, height)
    for b in sorted(groups, key=lambda b: (b != -1, -len(groups[b][0]))):
        pixel = plt.pixel(foreground=GREY if b == -1 else colours[b])
        f.draw(f.signal(*groups[b], marker=plt.marker("braille", pixel=pixel)))
    for c in fmap.clusters:
        label = plt.colorize(str(c.id), plt.pixel(foreground=CENTRE, style="bold"))
        f.draw(f.text(c.x, c.y, label, alignment="center"))
    f.ruler("x").ticks([], [])
    f.ruler("y").ticks([], [])
    return f.build().string().rstrip("\n")
