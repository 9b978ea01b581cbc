"""Terminal rendering of co-activation graphs (`saescope graph`, `saescope compare`):
the degree distributions as a plotext chart, the figures as rich tables."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.protocol_graph import FeatureMatch, GraphComparison, GraphNode, GraphStats

COLOURS = (39, 208)  # 256-colour codes: the first SAE, the second


def degree_chart(series: list[tuple[str, list[int]]], title: str, width: int = 78, height: int = 14) -> str:
    """The fraction of nodes of each degree (log y), one line per graph, with a legend."""
    import math

    import plotext as plt

    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(width, height)
    f.title(title)
    top = 1
    for i, (_, counts) in enumerate(series):
        total = max(sum(counts), 1)
        xs = [d for d, c in enumerate(counts) if c]
        ys = [math.log10(counts[d] / total) for d in xs]
        top = max(top, max(xs, default=1))
        sig = f.signal(xs, ys, marker=plt.marker("braille", pixel=plt.pixel(foreground=COLOURS[i % len(COLOURS)])))
        sig.lines()
        f.draw(sig)
    f.ruler("y").ticks([0, -1, -2, -3], ["1", ".1", ".01", ".001"])
    f.ruler("y").lim(-3.5, 0)
    f.ruler("x").lim(0, top)
    legend = "  ".join(f"\x1b[38;5;{COLOURS[i % len(COLOURS)]}m━━\x1b[0m {name}" for i, (name, _) in enumerate(series))
    return f.build().string().rstrip("\n") + "\n" + legend + "   (x: degree; y: fraction of nodes, log)"


def name_of(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def render_graph(stats: GraphStats, node: GraphNode | None = None) -> Group:
    figures = Table(title=f"co-activation graph of {name_of(stats.path)} ({stats.hook}, "
                          f"{stats.tokens:,} indexed tokens)", show_header=False)
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for label, value in (
            ("nodes (features that fired)", f"{stats.nodes:,} of {stats.d_sae:,}"),
            ("edges", f"{stats.edges:,}"),
            ("isolated nodes", f"{stats.isolated:,}"),
            ("degree: mean / median / max", f"{stats.mean_degree:.2f} / {stats.median_degree:g} / {stats.max_degree}"),
            ("strength (sum of weights): mean / max", f"{stats.mean_strength:.3f} / {stats.max_strength:.3f}"),
            ("connected components (largest)", f"{stats.components:,} ({stats.largest_component:,})"),
            ("clustering: unweighted / weighted", f"{stats.clustering:.3f} / {stats.clustering_weighted:.3f}"),
            ("Louvain communities: modularity", f"{stats.modularity:.3f}")):
        figures.add_row(label, value)
    communities = Table(title="largest communities")
    for col in ("id", "size", "strongest features", "described as"):
        communities.add_column(col, justify="right" if col in ("id", "size") else "left")
    for c in stats.communities:
        communities.add_row(str(c.id), str(c.size), " ".join(map(str, c.features[:6])), c.description)
    hubs = Table(title="hubs (highest degree)")
    for col in ("feature", "degree", "strength", "fires on", "described as"):
        hubs.add_column(col, justify="left" if col == "described as" else "right")
    for h in stats.hubs:
        hubs.add_row(str(h.feature), str(h.degree), f"{h.weight:.3f}", f"{h.count:,}", h.description)
    strength = " ".join(str(c) for c in stats.strength.counts)
    parts = [Text(f"rule: {stats.rule}", style="dim"), figures,
             Text.from_ansi(degree_chart([(name_of(stats.path), stats.degree_counts)], "degree distribution")),
             Text(f"strength histogram over [0, {stats.strength.edges[-1]:.3g}] in "
                  f"{len(stats.strength.counts)} bins: {strength}"), communities, hubs]
    if node is not None:
        parts.append(render_node(node))
    return Group(*parts)


def render_node(node: GraphNode) -> Table | Text:
    if not node.in_graph:
        return Text(f"feature {node.feature} never fired in the index: it has no neighbours")
    table = Table(title=f"feature {node.feature} ({node.description}): degree {node.degree}, strength "
                        f"{node.strength:.3f}, clustering {node.clustering:.3f}, community {node.community}")
    for col in ("neighbour", "weight", "both fire on", "jaccard", "act. cosine", "degree", "described as"):
        table.add_column(col, justify="left" if col == "described as" else "right")
    for nb in node.neighbours:
        table.add_row(str(nb.feature), f"{nb.weight:.3f}", f"{nb.count:,}", f"{nb.jaccard:.3f}", f"{nb.cosine:.3f}",
                      str(nb.degree), nb.description)
    return table


def _matches(title: str, matches: list[FeatureMatch], score: str) -> Table:
    table = Table(title=title)
    for col in ("feature", score, "described as"):
        table.add_column(col, justify="left" if col == "described as" else "right")
    for m in matches:
        table.add_row(str(m.feature), f"{m.score:.3f}", m.description)
    return table


def render_comparison(c: GraphComparison) -> Group:
    a, b = name_of(c.path), name_of(c.other)
    figures = Table(title=f"{a} vs {b} ({c.hook}): {c.matching_note}", show_header=False)
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    r, rb = c.random, c.other_random
    for label, value in (
            ("nodes / edges", f"{c.nodes:,} / {c.edges:,}  vs  {c.other_nodes:,} / {c.other_edges:,}"),
            ("degree JSD (divergence / distance), base 2", f"{c.degree_divergence:.4f} / {c.degree_distance:.4f}"),
            (f"{a} vs G(n, m), {r.draws} draws", f"{r.divergence_mean:.4f} ± {r.divergence_std:.4f} / "
                                                f"{r.distance_mean:.4f} ± {r.distance_std:.4f}"),
            (f"{b} vs G(n, m), {rb.draws} draws", f"{rb.divergence_mean:.4f} ± {rb.divergence_std:.4f} / "
                                                 f"{rb.distance_mean:.4f} ± {rb.distance_std:.4f}"),
            (f"shared (decoder cosine >= {c.threshold:g})", f"{c.shared_fraction:.1%}"),
            ("mean matched decoder cosine", f"{c.mean_cosine:.3f}"),
            (f"shared by encoder (cosine >= {c.threshold:g})", f"{c.encoder_shared_fraction:.1%}"),
            ("mean matched encoder cosine", f"{c.encoder_mean_cosine:.3f}"),
            ("decoder and encoder assignments agree on", f"{c.agreement:.1%}")):
        figures.add_row(label, value)
    for s in c.structural:
        given = f", {s.anchors} anchors given" if s.method == "anchored" else ", no anchors"
        figures.add_row(f"structural match, {s.method} ({s.evaluated} features{given}): top-1 / top-10",
                        f"{s.top1:.1%} / {s.top10:.1%}")
    parts = [figures, Text.from_ansi(degree_chart([(a, c.degree_counts), (b, c.other_degree_counts)],
                                                  "degree distributions"))]
    if c.feature is not None:
        partner = (f"its partner in {b}: {c.partner.feature} (decoder cosine {c.partner.score:.3f}) "
                   f"{c.partner.description}" if c.partner else f"no partner in {b} (the wider SAE's extra feature)")
        parts += [Text(f"feature {c.feature} of {a}: {c.description}\n{partner}"),
                  _matches(f"best matches in {b} by decoder", c.by_decoder, "cosine"),
                  _matches(f"by structure (edges to {c.structural[-1].anchors if c.structural else 0} anchors)",
                           c.by_structure, "score"),
                  _matches("by graph statistics alone", c.by_signature, "-distance")]
    return Group(*parts)
