"""What the Circuit pane draws from a `circuit.find` / `circuit.threshold` result, as
plain data and rich text (no Textual): the circuit as a layered tree, its row labels,
the summary line of its figures, and the step to the next point of the swept curve.

The tree: the metric at the root; below it the nodes with an edge to the metric;
each node's children are the nodes with an edge into it (earlier sites: the sites
run in reverse model order as you descend), the biggest |edge| first, so the
strongest paths are on screen first. A row carries the edge into its parent, the
number drawn beside the node's own effect.
Nodes that no chain of edges connects to the metric are listed under a group row
per site at the end, so every node of the circuit is on screen somewhere.

Notes
- The circuit is a graph, not a tree: a node fed into two others appears under
  both. Children are computed on demand (`children`), so a widget fills only the
  rows that are opened, however many paths there are.
- Labels pad the node's name by the row's depth, so the effect columns line up
  across levels despite the tree's indentation (`Columns`).
- Nothing here computes science: every number is the engine's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from rich.text import Text

from engine.protocol import CIRCUIT_METRIC_NODE, CircuitFound, CircuitNode, CurvePoint
from tui.circuit_methods import threshold_word

ERROR_MARK = "ε"  # an error term (the part of a site the SAE does not reconstruct)


@dataclass(frozen=True)
class Row:
    """One line of the circuit tree."""

    kind: Literal["metric", "node", "unconnected"]
    node: Optional[CircuitNode] = None
    parent: Optional[str] = None
    """The id of the node (or the metric) this row's edge leads into."""
    edge: Optional[float] = None
    """That edge's effect (None for the metric, and for nodes listed without edges)."""
    site: str = ""
    """An `unconnected` group's site."""
    count: int = 0
    """How many nodes an `unconnected` group holds."""


class CircuitLayout:
    """The tree of one circuit result; rows are built on demand."""

    def __init__(self, found: CircuitFound) -> None:
        self.found = found
        self.nodes = {n.id: n for n in found.nodes}
        into: dict[str, list[tuple[float, CircuitNode]]] = {}
        for e in found.edges:
            source = self.nodes.get(e.source)
            if source is not None and (e.target in self.nodes or e.target == CIRCUIT_METRIC_NODE):
                into.setdefault(e.target, []).append((e.effect, source))
        for edges in into.values():  # the biggest edge first; ties: the nearer site
            edges.sort(key=lambda pair: (-abs(pair[0]), -pair[1].site_index, pair[1].id))
        self._into = into
        reached = self._reached()
        self.unconnected = [n for n in found.nodes if n.id not in reached]

    def _reached(self) -> set[str]:
        seen, stack = set(), [CIRCUIT_METRIC_NODE]
        while stack:
            for _, node in self._into.get(stack.pop(), []):
                if node.id not in seen:
                    seen.add(node.id)
                    stack.append(node.id)
        return seen

    @property
    def root(self) -> Row:
        return Row("metric")

    def children(self, row: Row) -> list[Row]:
        """The rows under `row`: for the metric, its nodes and then the groups of nodes
        without a path to it (one per site, in reverse model order)."""
        if row.kind == "unconnected":
            return [Row("node", n) for n in self.unconnected if n.site == row.site]
        target = CIRCUIT_METRIC_NODE if row.kind == "metric" else row.node.id
        rows = [Row("node", n, target, effect) for effect, n in self._into.get(target, [])]
        if row.kind == "metric":
            sites = sorted({(n.site_index, n.site) for n in self.unconnected}, reverse=True)
            for _, site in sites:
                rows.append(Row("unconnected", site=site, count=sum(n.site == site for n in self.unconnected)))
        return rows

    def has_children(self, row: Row) -> bool:
        if row.kind != "node":
            return True
        return bool(self._into.get(row.node.id))

    @property
    def max_depth(self) -> int:
        """The deepest a row can be: one level per site below the metric."""
        return max(1, len(self.found.sites))


# ---- labels --------------------------------------------------------------------------
def node_name(node: CircuitNode) -> str:
    """`mlp_out #812`, `mlp_out #812@5` (per position), `mlp_out ε` (its error term)."""
    what = ERROR_MARK if node.feature is None else f"#{node.feature}"
    where = "" if node.position is None else f"@{node.position}"
    return f"{node.site} {what}{where}"


def signed(value: float, digits: int = 3) -> str:
    """`+0.412`, `−0.031` (a real minus sign, as elsewhere in the app)."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}".replace("-", "−")


def _colour(value: float) -> str:
    return "green" if value > 0 else "red" if value < 0 else "dim"


@dataclass(frozen=True)
class Columns:
    """Widths that line the labels up: the name column is padded by depth, as the
    tree indents each level by `indent` cells."""

    name: int
    max_depth: int
    indent: int

    @classmethod
    def of(cls, layout: CircuitLayout, indent: int) -> Columns:
        names = [len(node_name(n)) for n in layout.found.nodes] or [0]
        return cls(max(names), layout.max_depth, indent)

    def name_width(self, depth: int) -> int:
        return self.name + max(0, self.max_depth - depth) * self.indent


def node_label(row: Row, depth: int, columns: Columns, exact: float | None = None,
               edge_exact: float | None = None) -> Text:
    """`mlp_out #812   +0.412  →+0.210  ' was' after pronouns`: the node, its effect on
    the metric, the edge into the row above (and the exact values once verified), its
    feature's description. An error term is drawn dim and italic."""
    n = row.node
    error = n.feature is None
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(node_name(n).ljust(columns.name_width(depth)), style="dim italic" if error else "bold")
    text.append(f" {signed(n.effect):>7}", style=_colour(n.effect))
    if exact is not None:
        text.append(f" ={signed(exact)}", style="bold " + _colour(exact))
    if row.edge is not None:
        text.append(f"  →{signed(row.edge)}", style="dim " + _colour(row.edge))
        if edge_exact is not None:
            text.append(f" ={signed(edge_exact)}", style="bold " + _colour(edge_exact))
    if error:
        text.append("  error term", style="dim italic")
    elif n.description:
        text.append("  " + n.description)
    return text


def group_label(row: Row) -> Text:
    plural = "s" if row.count != 1 else ""
    return Text(f"{row.site}: {row.count} node{plural} without an edge to the metric", style="dim italic")


def metric_label(found: CircuitFound, complete: bool = True) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("metric ", style="dim")
    text.append(found.metric, style="bold")
    text.append(f" · {found.pairs} pairs, {found.held_out} held out", style="dim")
    if not complete:
        text.append("  partial sweep", style="bold yellow")
    return text


# ---- the summary line -----------------------------------------------------------------
def summary(found: CircuitFound, complete: bool = True, width: int | None = None) -> Text:
    """`23 nodes (4 ε) · threshold 0.0123 · faithfulness 0.842 (plain 0.851) · completeness 0.118`:
    the nodes, how many of them are error terms (or that error nodes are left out);
    a mask circuit's `lambda` instead of the threshold. `plain` is m(C)/m(M), the
    faithfulness without the empty circuit's baseline, where the engine gives it.
    With a `width` the parts that do not fit go to the next line, broken between
    parts only (a figure is never split from its name)."""
    f = found.figures
    first = Text()
    first.append(f"{f.nodes} node{'s' if f.nodes != 1 else ''}", style="bold")
    first.append(f" ({f.nodes - f.features} {ERROR_MARK})" if found.errors else " (no ε)", style="dim")
    parts = [first, Text(f"{threshold_word(found.method)} {f.threshold:.3g}", style="dim")]
    faithful = Text.assemble("faithfulness ", (f"{f.faithfulness:.3f}", "bold"))
    if f.plain is not None:
        faithful.append(f" (plain {f.plain:.3f})", style="dim")
    parts += [faithful, Text.assemble("completeness ", (f"{f.completeness:.3f}", "bold"))]
    if not complete:
        parts.append(Text("partial", style="bold yellow"))
    text, line = Text(no_wrap=True, overflow="ellipsis"), 0
    for i, part in enumerate(parts):
        if i and width is not None and line + 3 + len(part) > width:
            text.append("\n")
            line = 0
        elif i:
            text.append(" · ")
            line += 3
        text.append_text(part)
        line += len(part)
    return text


# ---- stepping along the curve -----------------------------------------------------------
def step_point(curve: list[CurvePoint], threshold: float, step: int) -> CurvePoint | None:
    """The swept point one step up (`step` > 0: the next higher threshold, a smaller
    circuit) or down from `threshold`; None past either end. `threshold` need not be
    on the curve (after errors were toggled it belongs to the other one)."""
    eps = 1e-9 * max(abs(threshold), 1e-12)
    if step > 0:
        higher = [p for p in curve if p.threshold > threshold + eps]
        return min(higher, key=lambda p: p.threshold, default=None)
    lower = [p for p in curve if p.threshold < threshold - eps]
    return max(lower, key=lambda p: p.threshold, default=None)
