"""Two SAEs' co-activation graphs compared (seed 004's questions): are their graphs alike,
which features are the same, and can graph structure alone find a feature's partner?

- Degree distributions: the Jensen-Shannon divergence (base 2, so in [0, 1]) and its
  square root, the JS distance (scipy's `jensenshannon` returns the distance). The
  baseline is each graph against Erdos-Renyi G(n, m) graphs with its own numbers of
  nodes and edges (networkx `gnm_random_graph`), over several seeded draws.
- Feature matching: an optimal one-to-one assignment (scipy `linear_sum_assignment`)
  on the cosine of unit decoder rows, and separately of unit encoder columns. With
  different widths min(d_a, d_b) pairs are matched, and the shared fraction is of
  the smaller SAE's features. A feature is shared when its matched cosine is at
  least `threshold`. Above `OPTIMAL_MAX` features, each feature's nearest direction
  in the other SAE instead (not one-to-one), and the comparison's note says so.
- Structural matching, two ways, scored against the decoder matching on the A
  features whose decoder partner has cosine >= `threshold` (those that have a true
  partner), as top-1 and top-10 accuracy:
  `signature`: each node described by graph statistics only (log firing count,
  degree, strength, clustering, mean neighbour degree, largest edge weight),
  z-scored over both graphs; candidates ranked by Euclidean distance. No anchors.
  `anchored`: a fraction `anchors` of the true pairs is given (the "already matched
  neighbours"); every other feature is described by its edge weights to the
  anchors in the complete weighted graph (every co-firing pair, before the edge
  rule: on the thresholded graph most features touch no anchor at all), and
  candidates are ranked by the cosine of those profiles. Scored on the features
  that were not anchors.
- Ties count against a method: the partner is found at rank r when r other
  candidates score at least as high.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon

from engine.graph import PairTable, degree_distribution, strengths

TOP_K = 10  # the wider accuracy: the partner among the best TOP_K candidates
BLOCK = 1024  # rows of A scored at a time (a [BLOCK, d_b] matrix)
OPTIMAL_MAX = 8192  # the widest SAEs matched by an optimal assignment (about 10 s and 0.5 GB at 8192)


def jsd(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """(divergence, distance) between two distributions, base 2."""
    n = max(len(p), len(q))
    p, q = np.pad(p, (0, n - len(p))), np.pad(q, (0, n - len(q)))
    distance = float(jensenshannon(p, q, base=2))
    return distance ** 2, distance


def degree_jsd(g_a: nx.Graph, g_b: nx.Graph) -> tuple[float, float]:
    return jsd(degree_distribution(g_a), degree_distribution(g_b))


def random_baseline(g: nx.Graph, draws: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(divergences, distances) of `g`'s degree distribution against `draws` G(n, m) graphs."""
    n, m = g.number_of_nodes(), g.number_of_edges()
    pairs = [degree_jsd(g, nx.gnm_random_graph(n, m, seed=seed + r)) for r in range(draws)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def assignment(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows of a, their partners in b, cosines): the one-to-one matching of unit rows
    that maximises the summed cosine, min(len(a), len(b)) pairs; above `OPTIMAL_MAX`
    rows (the assignment is O(n^3) in time and holds an n x n matrix), each row's
    nearest row of b instead, computed by blocks (`matching_method` says which)."""
    ua, ub = unit(a), unit(b)
    if matching_method(len(a), len(b)) == "nearest":
        cols = np.concatenate([(ua[lo:lo + BLOCK] @ ub.T).argmax(1) for lo in range(0, len(a), BLOCK)])
        rows = np.arange(len(a))
        return rows, cols, np.einsum("ij,ij->i", ua, ub[cols])
    cos = ua @ ub.T
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return rows, cols, cos[rows, cols]


def matching_method(d_a: int, d_b: int) -> str:
    return "optimal" if min(d_a, d_b) <= OPTIMAL_MAX else "nearest"


def partner_of(rows: np.ndarray, cols: np.ndarray, d_a: int) -> np.ndarray:
    """[d_a]: each A feature's partner in B (-1: unmatched, when A is the wider)."""
    partner = np.full(d_a, -1, dtype=np.int64)
    partner[rows] = cols
    return partner


def signatures(g: nx.Graph, d_sae: int) -> np.ndarray:
    """[d_sae, 6] node statistics (zeros for features not in the graph)."""
    nodes = sorted(g)
    clustering = nx.clustering(g)
    neighbour_degree = nx.average_neighbor_degree(g)
    sig = np.zeros((d_sae, 6))
    for n, s in zip(nodes, strengths(g, nodes)):
        weights = [e["weight"] for e in g[n].values()]
        sig[n] = [np.log10(g.nodes[n]["fires"]), np.log1p(g.degree(n)), np.log1p(s), clustering[n],
                  np.log1p(neighbour_degree[n]), max(weights, default=0.0)]
    return sig


def weighted_adjacency(pairs: PairTable, weight: str) -> scipy.sparse.csr_array:
    """[d_sae, d_sae]: every co-firing pair's weight, both ways: the complete weighted
    graph, before any edge rule (the anchored matching's input)."""
    w, d_sae = pairs.weight(weight), len(pairs.fire_count)
    rows, cols = np.concatenate([pairs.i, pairs.j]), np.concatenate([pairs.j, pairs.i])
    return scipy.sparse.csr_array((np.concatenate([w, w]), (rows, cols)), shape=(d_sae, d_sae))


def rank_of_partner(score_rows: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each row, how many other candidates score at least as high as its true partner
    (a tie counts against it: a feature that touches no anchor scores 0 everywhere and
    must not count as found)."""
    true_scores = score_rows[np.arange(len(truth)), truth]
    return (score_rows >= true_scores[:, None]).sum(1) - 1


def signature_scores(sig_a: np.ndarray, sig_b: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[len(rows), d_b]: minus the distance between z-scored signatures (higher is closer)."""
    both = np.concatenate([sig_a, sig_b])
    mean, std = both.mean(0), both.std(0) + 1e-12
    za, zb = (sig_a[rows] - mean) / std, (sig_b - mean) / std
    return -np.sqrt(((za[:, None, :] - zb[None, :, :]) ** 2).sum(-1))


def anchored_scores(adj_a, adj_b, anchors_a: np.ndarray, anchors_b: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[len(rows), d_b]: the cosine of the rows' edge weights to A's anchors against each B
    feature's edge weights to the anchors' partners (0 where a feature touches no anchor)."""
    pa = unit(adj_a[rows][:, anchors_a].toarray())
    pb = unit(adj_b[:, anchors_b].toarray())
    return pa @ pb.T


def accuracy(score_fn, rows: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(top-1, top-TOP_K) accuracy of `score_fn(rows_block)` at finding `truth`, by blocks."""
    ranks = np.concatenate([rank_of_partner(score_fn(rows[lo:lo + BLOCK]), truth[lo:lo + BLOCK])
                            for lo in range(0, len(rows), BLOCK)]) if len(rows) else np.zeros(0)
    if len(ranks) == 0:
        return 0.0, 0.0
    return float((ranks == 0).mean()), float((ranks < TOP_K).mean())


def pick_anchors(true_rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random subset of the A features with a true partner."""
    rng = np.random.default_rng(seed)
    n = int(round(fraction * len(true_rows)))
    return np.sort(rng.choice(true_rows, size=n, replace=False)) if n else np.zeros(0, dtype=np.int64)
