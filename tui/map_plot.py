"""The feature map's plot for the TUI: a `FeatureMap`'s points as a plotext scatter,
coloured by one of its colourings' bins, with each cluster's number at its centre;
ANSI text at a given size (see `tui.plots`).

Notes
- The bins are the engine's (`FeatureMap.colorings`); this only paints them, in
  the colours `saescope map` paints them (engine/render_map.py, which the TUI may
  not import: the ramp is repeated here).
- The most populous bin is drawn first, so the rare ones (near-dead features, the
  last to emerge) stay visible on top; features without a value are grey, under all.
"""

from __future__ import annotations

import plotext as plt
from rich.text import Text

from engine.protocol import FeatureMap, MapColoring
from tui.plots import MIN_HEIGHT, MIN_WIDTH, _placeholder

plt.terminal.limit(False, False)

RAMP = (27, 33, 39, 45, 50, 83, 118, 154, 190, 226, 220, 214, 208, 202, 196)  # as engine/render_map.py
GREY, CENTRE = 244, 231


def bin_colours(n: int) -> list[int]:
    if n <= 1:
        return [RAMP[len(RAMP) // 2]] * n
    return [RAMP[round(i * (len(RAMP) - 1) / (n - 1))] for i in range(n)]


def coloring_named(fmap: FeatureMap, name: str) -> MapColoring | None:
    return next((c for c in fmap.colorings if c.name == name), None)


def legend(coloring: MapColoring | None) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if coloring is None:
        return text.append("not coloured: the SAE folder has no sparsity.safetensors", style="dim")
    text.append(coloring.title + "  ")
    for label, colour in zip(coloring.labels, bin_colours(len(coloring.labels))):
        text.append("● ", style=f"color({colour})").append(label + "  ")
    if -1 in coloring.bin:
        text.append("● ", style=f"color({GREY})").append("none")
    return text


def map_plot(fmap: FeatureMap, coloring: MapColoring | None, width: int, height: int) -> str:
    if width < MIN_WIDTH or height < MIN_HEIGHT or not fmap.x:
        return _placeholder(width, height, "", "too small to draw" if height >= 2 else "")
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
