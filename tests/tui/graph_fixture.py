"""Constructed graph results (no engine) for the Graph pane's layout snapshot: an SAE's
statistics, feature 5 and two of its neighbours (one lists 5 back: a cycle), and a
comparison of 5's first neighbour with another seed.

The numbers are made up but shaped like the engine's for the shipped TopK seeds
(1024 features, a heavy-tailed degree distribution)."""

from __future__ import annotations

from engine.protocol import (Distribution, FeatureMatch, GraphComparison, GraphNeighbour, GraphNode, GraphStats,
                             RandomBaseline, StructuralAccuracy)

PATH, OTHER = "/w/saes/mlp_out-topk", "/w/saes/mlp_out-topk-s1"


def degrees(seed: int) -> list[int]:
    """Nodes of degree 0, 1, ...: many isolated, a long thin tail (deterministic)."""
    counts = [max(0, int(330 * 0.9 ** d)) for d in range(60)]
    return [c + (d * seed) % 3 if c else (1 if (d * 7 + seed) % 5 == 0 else 0) for d, c in enumerate(counts)]


DEGREES, OTHER_DEGREES = degrees(1), degrees(2)


def neighbour(feature: int, weight: float, degree: int, description: str) -> GraphNeighbour:
    return GraphNeighbour(feature=feature, weight=weight, count=int(weight * 900), jaccard=weight, cosine=weight + 0.1,
                          degree=degree, description=description)


def node(feature: int, description: str, neighbours: list[GraphNeighbour]) -> GraphNode:
    return GraphNode(path=PATH, feature=feature, description=description, in_graph=True, fires=27636,
                     degree=len(neighbours), strength=round(sum(n.weight for n in neighbours), 3), clustering=0.8,
                     community=0, neighbours=neighbours)


NODES = {
    5: node(5, "'_'", [neighbour(531, 0.294, 25, "'_'"), neighbour(423, 0.263, 19, "'_' '__'"),
                       neighbour(390, 0.100, 1, "'(' ' ['"), neighbour(630, 0.083, 7, "'__(' '(' '['")]),
    531: node(531, "'_'", [neighbour(423, 0.329, 19, "'_' '__'"), neighbour(5, 0.294, 18, "'_'"),
                           neighbour(868, 0.260, 11, "' self' '.'")]),
}

STATS = GraphStats(
    path=PATH, hook="blocks.0.hook_mlp_out", d_sae=1024, tokens=1048576, weight="jaccard", min_weight=0.05,
    min_count=10, rule="edge i-j when jaccard >= 0.05 and both fire together on >= 10 tokens",
    definition="features fire together: both positive on the same token", nodes=1024, dead=0, edges=6872,
    isolated=332, mean_degree=13.4, median_degree=3.0, max_degree=115, mean_strength=1.9, max_strength=21.4,
    components=356, largest_component=660, clustering=0.329, clustering_weighted=0.12, modularity=0.560,
    communities=[], degree_counts=DEGREES, strength=Distribution(edges=[0.0, 1.0, 2.0], counts=[700, 324]),
    hubs=[])

COMPARISON = GraphComparison(
    path=PATH, other=OTHER, hook="blocks.0.hook_mlp_out", d_sae=1024, other_d_sae=1024,
    matching_note="one-to-one matching of all 1024 features", nodes=1024, other_nodes=1024, edges=6872,
    other_edges=6790, degree_divergence=0.046, degree_distance=0.215,
    random=RandomBaseline(draws=5, divergence_mean=0.570, divergence_std=0.003, distance_mean=0.755,
                          distance_std=0.002),
    other_random=RandomBaseline(draws=5, divergence_mean=0.566, divergence_std=0.004, distance_mean=0.752,
                                distance_std=0.003),
    threshold=0.7, shared_fraction=0.469, mean_cosine=0.646, encoder_shared_fraction=0.41, encoder_mean_cosine=0.62,
    agreement=0.93,
    structural=[StructuralAccuracy(method="signature", top1=0.077, top10=0.319, evaluated=480, anchors=0),
                StructuralAccuracy(method="anchored", top1=0.853, top10=0.961, evaluated=432, anchors=48)],
    degree_counts=DEGREES, other_degree_counts=OTHER_DEGREES, feature=5, description="'_'",
    partner=FeatureMatch(feature=203, score=0.795, description="'_'"),
    by_decoder=[FeatureMatch(feature=203, score=0.795, description="'_'")],
    by_structure=[FeatureMatch(feature=203, score=0.913, description="'_'"),
                  FeatureMatch(feature=879, score=0.869, description="'_' 'lock'"),
                  FeatureMatch(feature=723, score=0.866, description="' __init__'")],
    by_signature=[FeatureMatch(feature=957, score=-0.571, description="'\\n'")])
