"""`saescope map`'s output: the feature map (a `FeatureMap`, engine/geometry.py) as a
plotext scatter in the terminal with a table of its clusters, or as a PNG.

Notes
- The scatter and its legend are engine/map_draw.py's, which the app's map screen
  draws with too.
- The PNG colours by the raw values with a colour bar (matplotlib's Agg backend,
  no display needed) and is written atomically (engine/atomic.py).
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.map_draw import legend, scatter
from engine.protocol import FeatureMap, MapColoring

def coloring_of(fmap: FeatureMap, name: str | None = None) -> MapColoring | None:
    """The colouring named `name` (default: the one asked for), else the first there is."""
    name = name or fmap.color
    return next((c for c in fmap.colorings if c.name == name), fmap.colorings[0] if fmap.colorings else None)


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
    points = Text.from_ansi(scatter(fmap, coloring, max(width, 20), max(height, 6)))
    parts = [head, points, legend(coloring), cluster_table(fmap)]
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
