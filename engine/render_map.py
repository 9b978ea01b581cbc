"""`saescope map`'s output: the feature map (a `FeatureMap`, engine/geometry.py) as a
plotext scatter in the terminal with a table of its clusters, or as a PNG.

Notes
- The colour bins are the engine's (`FeatureMap.colorings`): this module only
  paints them. The TUI's screen (tui/map_plot.py) paints the same bins, in the
  same colours, from the same struct; it cannot import this module (engine/).
- Bins are drawn most populous first, so a rare bin (dead-ish features, the
  latest to emerge) lands on top and stays visible. Features without a value
  (a never-formed feature) are grey, under everything.
- The PNG colours by the raw values with a colour bar (matplotlib's Agg backend,
  no display needed) and is written atomically (engine/atomic.py).
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Group
from rich.table import Table
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


def coloring_of(fmap: FeatureMap, name: str | None = None) -> MapColoring | None:
    """The colouring named `name` (default: the one asked for), else the first there is."""
    name = name or fmap.color
    return next((c for c in fmap.colorings if c.name == name), fmap.colorings[0] if fmap.colorings else None)


def legend(coloring: MapColoring | None) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if coloring is None:
        return text.append("no colouring: the SAE folder has no sparsity.safetensors", style="dim")
    text.append(coloring.title + ": ")
    for label, colour in zip(coloring.labels, bin_colours(len(coloring.labels))):
        text.append("● ", style=f"color({colour})").append(label + "  ")
    if -1 in coloring.bin:
        text.append("● ", style=f"color({GREY})").append("none")
    return text


def scatter(fmap: FeatureMap, width: int, height: int, coloring: MapColoring | None = None) -> str:
    """The points, coloured by `coloring`'s bins, with each cluster's number at its centre."""
    import plotext as plt

    plt.terminal.limit(False, False)  # the caller, not the terminal, sets the size
    groups: dict[int, tuple[list[float], list[float]]] = {}
    bins = coloring.bin if coloring is not None else [-1] * fmap.d_sae
    for x, y, b in zip(fmap.x, fmap.y, bins):
        xs, ys = groups.setdefault(b, ([], []))
        xs.append(x)
        ys.append(y)
    colours = bin_colours(len(coloring.labels)) if coloring is not None else []
    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(max(width, 20), max(height, 6))
    for b in sorted(groups, key=lambda b: (b != -1, -len(groups[b][0]))):
        colour = GREY if b == -1 else colours[b]
        f.draw(f.signal(*groups[b], marker=plt.marker("braille", pixel=plt.pixel(foreground=colour))))
    for c in fmap.clusters:
        f.draw(f.text(c.x, c.y, plt.colorize(str(c.id), plt.pixel(foreground=CENTRE, style="bold")), alignment="center"))
    f.ruler("x").ticks([], [])
    f.ruler("y").ticks([], [])
    return f.build().string().rstrip("\n")


def axes_note(fmap: FeatureMap) -> str:
    if fmap.method == "pca":
        pcs = ", ".join(f"PC{i + 1} {v:.1%}" for i, v in enumerate(fmap.explained_variance))
        return f"PCA of the unit decoder directions ({pcs} of the variance)"
    return "UMAP of the unit decoder directions (cosine)"


def cluster_table(fmap: FeatureMap) -> Table:
    table = Table("cluster", "features", "median density", "central features", "description",
                  title=f"{len(fmap.clusters)} clusters (k-means on the unit directions)")
    for c in fmap.clusters:
        density = "" if c.density is None else f"{10 ** c.density:.2g}"
        table.add_row(str(c.id), str(c.size), density, " ".join(f"#{f}" for f in c.features), c.description)
    return table


def render_map(fmap: FeatureMap, width: int = 100, height: int = 30) -> Group:
    coloring = coloring_of(fmap)
    head = Text.assemble((f"{fmap.path}", "bold"), f"  {fmap.d_sae} features  ", (axes_note(fmap), "dim"))
    if fmap.method_note:
        head.append(f"  ({fmap.method_note})", style="dim")
    parts = [head, Text.from_ansi(scatter(fmap, width, height, coloring)), legend(coloring), cluster_table(fmap)]
    if fmap.description_note:
        parts.append(Text(fmap.description_note, style="dim"))
    return Group(*parts)


def write_png(fmap: FeatureMap, path: str | Path, color: str | None = None, dpi: int = 150) -> None:
    """The map as a PNG: points coloured by the raw density or emergence step (grey
    where a feature has none) with a colour bar, cluster numbers at their centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from engine.atomic import atomic_write_bytes

    coloring = coloring_of(fmap, color)
    values = None
    if coloring is not None:
        raw = fmap.density if coloring.name == "density" else fmap.emergence
        values = np.array([np.nan if v is None else v for v in raw], dtype=float)
    x, y = np.array(fmap.x), np.array(fmap.y)
    fig, ax = plt.subplots(figsize=(7, 6))
    try:
        size = max(1.0, min(12.0, 6000 / max(1, fmap.d_sae)))
        if values is None:
            ax.scatter(x, y, s=size, c="tab:blue", linewidths=0)
        else:
            known = np.isfinite(values)
            late = coloring.name == "emergence"
            ax.scatter(x[~known], y[~known], s=size, c="lightgrey", linewidths=0,
                       label="never formed" if late else "no value")
            order = np.argsort(values[known] if late else -values[known])  # the latest / rarest on top
            points = ax.scatter(x[known][order], y[known][order], s=size, c=values[known][order],
                                cmap="viridis", linewidths=0)
            fig.colorbar(points, ax=ax, label=coloring.title)
            if not known.all():
                ax.legend(loc="lower right", fontsize=8, markerscale=3, frameon=False)
        for c in fmap.clusters:
            ax.annotate(str(c.id), (c.x, c.y), ha="center", va="center", fontsize=9, weight="bold",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
        ax.set_title(f"{Path(fmap.path).name}: {axes_note(fmap)}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
