"""The co-activation graph of an SAE's features (seed 004): features are nodes, and two
features are joined when they fire together on the same tokens often enough.

Built from the co-occurrence the index counts (engine/cooccur.py), so it needs no
model pass of its own. The graph algorithms are networkx's.

Definitions (`GraphStats.rule` says them in words)
- Nodes: the features that fired at least once in the index (a dead feature cannot
  co-fire; the count of those left out is reported).
- Edge weight, one of:
  `jaccard` C_ij / (C_ii + C_jj - C_ij), the share of tokens where either fires on which both do;
  `cosine`  the cosine of the two activation vectors over the indexed tokens;
  `count`   C_ij, tokens where both fire.
- Edge rule: an edge i-j is kept when its weight >= `min_weight` and the two co-fired
  on at least `min_count` tokens (so a pair of rare features that met once is not an
  edge of weight 1).
- Degree: the number of edges at a node. Strength: the SUM of its edges' weights.
- Clustering: networkx's average clustering coefficient over all nodes, unweighted
  and weighted (geometric mean of the triangle's normalised weights).
- Communities: Louvain (networkx), weighted, seeded, with their modularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from engine.errors import UserError
from engine.protocol_graph import GRAPH_MIN_COUNT as DEFAULT_MIN_COUNT
from engine.protocol_graph import GRAPH_MIN_WEIGHT as DEFAULT_MIN_WEIGHT

WEIGHTS = ("jaccard", "cosine", "count")
DEFAULT_WEIGHT = "jaccard"
COMMUNITY_FEATURES = 8  # features listed per community (by strength)
STRENGTH_BINS = 20


@dataclass
class PairTable:
    """Every co-firing pair i < j of an index with its count and weights (numpy arrays)."""

    i: np.ndarray
    j: np.ndarray
    count: np.ndarray
    jaccard: np.ndarray
    cosine: np.ndarray
    fire_count: np.ndarray  # [d_sae]

    def weight(self, name: str) -> np.ndarray:
        return {"jaccard": self.jaccard, "cosine": self.cosine, "count": self.count.astype(np.float64)}[name]


def pair_table(index) -> PairTable:
    """The pairs of a `FeatureIndex` that has co-occurrence (`has_cooccurrence`)."""
    offsets = index.cooc_offsets.numpy()
    i = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    j = index.cooc_columns.numpy().astype(np.int64)
    count = index.cooc_counts.numpy().astype(np.int64)
    fire = index.fire_count.numpy().astype(np.int64)
    jaccard = count / np.maximum(fire[i] + fire[j] - count, 1)
    sq = index.act_sq_sum.numpy()
    cosine = index.cooc_products.numpy().astype(np.float64) / np.maximum(np.sqrt(sq[i] * sq[j]), 1e-30)
    return PairTable(i, j, count, jaccard, cosine, fire)


def check_weight(weight: str) -> str:
    if weight not in WEIGHTS:
        raise UserError(f"unknown edge weight {weight!r}: one of {', '.join(WEIGHTS)}")
    return weight


def build_graph(pairs: PairTable, weight: str = DEFAULT_WEIGHT, min_weight: float = DEFAULT_MIN_WEIGHT,
                min_count: int = DEFAULT_MIN_COUNT) -> nx.Graph:
    """The graph by the module's edge rule; nodes carry `fires` (C_ii), edges `weight`,
    `count`, `jaccard` and `cosine`."""
    check_weight(weight)
    w = pairs.weight(weight)
    keep = (w >= min_weight) & (pairs.count >= min_count)
    g = nx.Graph()
    alive = np.flatnonzero(pairs.fire_count > 0)
    g.add_nodes_from((int(f), {"fires": int(pairs.fire_count[f])}) for f in alive)
    g.add_edges_from(
        (int(a), int(b), {"weight": float(x), "count": int(c), "jaccard": float(jc), "cosine": float(cs)})
        for a, b, x, c, jc, cs in zip(pairs.i[keep], pairs.j[keep], w[keep], pairs.count[keep],
                                      pairs.jaccard[keep], pairs.cosine[keep]))
    return g


def degrees(g: nx.Graph, nodes=None) -> np.ndarray:
    return np.array([d for _, d in g.degree(nodes if nodes is not None else sorted(g))], dtype=np.int64)


def strengths(g: nx.Graph, nodes=None) -> np.ndarray:
    return np.array([s for _, s in g.degree(nodes if nodes is not None else sorted(g), weight="weight")])


def degree_distribution(g: nx.Graph, length: int | None = None) -> np.ndarray:
    """P(degree = d) for d = 0..length-1 (default: up to the largest degree)."""
    counts = np.array(nx.degree_histogram(g), dtype=np.float64)
    if length is not None:
        counts = np.pad(counts, (0, max(0, length - len(counts))))[:length]
    return counts / max(counts.sum(), 1)


def communities(g: nx.Graph, seed: int = 0) -> tuple[list[set[int]], float]:
    """Louvain communities, largest first, and their modularity (0 for an edgeless graph)."""
    if g.number_of_edges() == 0:
        return [{n} for n in g], 0.0
    found = nx.community.louvain_communities(g, weight="weight", seed=seed)
    found = sorted(found, key=lambda c: (-len(c), min(c)))
    return found, float(nx.community.modularity(g, found, weight="weight"))


def histogram(values: np.ndarray, bins: int = STRENGTH_BINS) -> tuple[list[float], list[int]]:
    """(edges, counts) over [0, max]: `bins` equal bins."""
    top = float(values.max()) if len(values) else 1.0
    counts, edges = np.histogram(values, bins=bins, range=(0.0, top if top > 0 else 1.0))
    return edges.tolist(), counts.tolist()


def rule_text(weight: str, min_weight: float, min_count: int) -> str:
    return (f"edge i-j when {weight} >= {min_weight:g} and both fire together on >= {min_count} tokens; "
            f"nodes: features that fired in the index; strength = sum of edge weights")
