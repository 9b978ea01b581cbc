"""The feature map's plot for the TUI: engine/map_draw.py's scatter at the screen's size,
or a placeholder where it does not fit (see `tui.plots`)."""

from __future__ import annotations

from engine.map_draw import legend, scatter
from engine.protocol import FeatureMap, MapColoring
from tui.plots import MIN_HEIGHT, MIN_WIDTH, _placeholder

__all__ = ["coloring_named", "legend", "map_plot"]


def coloring_named(fmap: FeatureMap, name: str) -> MapColoring | None:
    return next((c for c in fmap.colorings if c.name == name), None)


def map_plot(fmap: FeatureMap, coloring: MapColoring | None, width: int, height: int) -> str:
    if width < MIN_WIDTH or height < MIN_HEIGHT or not fmap.x:
        return _placeholder(width, height, "", "too small to draw" if height >= 2 else "")
    return scatter(fmap, coloring, width, height)
