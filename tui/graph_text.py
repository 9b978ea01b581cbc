"""The Graph pane's words and figures as rich text (no Textual here): the graph's
header line and its tooltip, the tree's row labels, and the comparison's lines.

Notes
- Every figure is the engine's, formatted only; tests compare the lines with the
  `graph.stats` / `graph.compare` results they decode themselves.
- Descriptions are the index's top tokens (`'_' 'lock'`); an empty one is shown as
  `(no description)` so a row never looks cut off.
"""

from __future__ import annotations

from rich.text import Text

from engine.protocol import FeatureMatch, GraphComparison, GraphNeighbour, GraphNode, GraphStats, StructuralAccuracy

SAE_A, SAE_B = 39, 208  # 256-colour codes of the SAE and the one compared with (plot and text agree)


def describe(description: str) -> str:
    return description or "(no description)"


def stats_line(s: GraphStats) -> Text:
    """`1024 nodes · 6872 edges · deg 13.4 · 356 components · clust 0.329 · mod 0.560`: short
    enough for 80 columns; `STATS_NAMES` (the tooltip) spells the short names out."""
    parts = [("", f"{s.nodes}", " nodes"), ("", f"{s.edges}", " edges"), ("deg ", f"{s.mean_degree:.1f}", ""),
             ("", f"{s.components}", " components"), ("clust ", f"{s.clustering:.3f}", ""),
             ("mod ", f"{s.modularity:.3f}", "")]
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (before, value, after) in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        text.append(before, style="dim")
        text.append(value, style="bold")
        text.append(after, style="dim")
    return text


STATS_NAMES = ("deg: mean degree · components: connected components, isolated nodes included · "
               "clust: average clustering coefficient (unweighted) · mod: modularity of the Louvain communities")


def stats_tooltip(s: GraphStats) -> str:
    """The edge rule and the definitions, in the engine's words, and the rest of the figures."""
    return (f"{s.path} ({s.hook}, {s.d_sae} features)\n"
            f"{s.rule}\n{s.definition}\n{STATS_NAMES}\n"
            f"{s.tokens} indexed tokens · {s.dead} features never fired · {s.isolated} isolated · "
            f"max degree {s.max_degree} · median {s.median_degree:g}\n"
            f"largest component {s.largest_component} · weighted clustering {s.clustering_weighted:.3f} · "
            f"{len(s.communities)} communities listed")


def root_label(node: GraphNode) -> Text:
    """The tree's root: `#5 '_'  degree 18`."""
    text = Text.assemble((f"#{node.feature} ", "bold"), describe(node.description))
    if not node.in_graph:
        text.append("  never fired", style="dim")
    else:
        text.append(f"  degree {node.degree}", style="dim")
    return text


def neighbour_label(n: GraphNeighbour, width: int, on_path: bool) -> Text:
    """A neighbour row: `#531  0.294  '_'`; `↺` when it is already on the path to the root."""
    text = Text.assemble((f"#{n.feature:<{width}} ", "bold"), (f"{n.weight:.3f} ", "cyan"))
    if on_path:
        text.append("↺ ", style="yellow")
    text.append(describe(n.description), style="dim" if on_path else "")
    return text


def percent(x: float) -> str:
    return f"{100 * x:.0f}%"


def jsd_line(c: GraphComparison) -> Text:
    """`JSD 0.046 · distance 0.215` / `random graphs 0.570 ± 0.003`: the degree distributions'
    divergence, over this SAE's graph's against random graphs of its own size."""
    r = c.random
    return Text.assemble("JSD ", (f"{c.degree_divergence:.3f}", "bold"), (" · distance ", "dim"),
                         f"{c.degree_distance:.3f}", ("\nrandom graphs ", "dim"),
                         f"{r.divergence_mean:.3f} ± {r.divergence_std:.3f}")


def structural_cell(a: StructuralAccuracy) -> str:
    return f"{'sig' if a.method == 'signature' else 'anch'} {percent(a.top1)}/{percent(a.top10)}"


def figures_lines(c: GraphComparison) -> Text:
    """The comparison's summary: shared fraction at the threshold, mean matched cosine,
    and the structural matching's top-1/top-10 accuracy for each method."""
    text = Text.assemble("shared ", (percent(c.shared_fraction), "bold"), f" at cos ≥ {c.threshold:g}",
                         (" · ", "dim"), "mean cos ", (f"{c.mean_cosine:.3f}", "bold"))
    text.append("\nstruct. top-1/10: ")
    text.append(", ".join(structural_cell(a) for a in c.structural) or "–")
    return text


FIGURES_NAMES = ("shared: the fraction of features whose one-to-one decoder match has cosine at least the "
                 "threshold · mean cos: over all matched pairs\n"
                 "struct. top-1/10: how often the decoder partner is the best (among the ten best) candidate "
                 "by graph structure alone: sig by each node's graph statistics, anch given some true pairs "
                 "as anchors")


def pair_text(name_a: str, name_b: str, c: GraphComparison) -> tuple[Text, Text]:
    """The compared feature and its partner in the other SAE, one text each (side by side):
    `mlp_out-topk #5` / `'_'` and `mlp_out-topk-s1 #152` / `cos 0.28 · 'state'`."""
    left = Text.assemble((name_a, f"color({SAE_A})"), (f" #{c.feature}\n", "bold"), describe(c.description))
    if c.partner is None:
        right = Text.assemble((name_b, f"color({SAE_B})"), "\n", ("no partner", "dim"))
    else:
        p = c.partner
        right = Text.assemble((name_b, f"color({SAE_B})"), (f" #{p.feature}\n", "bold"),
                              (f"cos {p.score:.2f} · ", "cyan"), describe(p.description))
    return left, right


def match_rows(c: GraphComparison, structure: int = 3) -> list[tuple[str, FeatureMatch]]:
    """The matches table's rows: the partner (decoder cosine), then the best few by structure."""
    rows = [("partner", c.partner)] if c.partner is not None else []
    rows += [("struct", m) for m in c.by_structure[:structure]]
    return rows
