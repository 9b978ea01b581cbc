"""The protocol's co-activation graph methods (engine/graph.py, engine/graph_compare.py):
their parameters, with the defaults defined once here, and their results.

`graph.stats` (GraphParams -> GraphStats), `graph.node` (GraphNodeParams -> GraphNode),
`graph.compare` (GraphCompareParams -> GraphComparison). engine/protocol.py registers
them and re-exports every name, so clients import from there.
"""

from __future__ import annotations

from typing import Literal, Optional

import msgspec

from engine.protocol_base import Result

GraphWeight = Literal["jaccard", "cosine", "count"]
GRAPH_MIN_WEIGHT = 0.05  # Jaccard: about three times what two independent features at 3% density reach
GRAPH_MIN_COUNT = 10  # tokens on which both fire
GRAPH_SHARED_COSINE = 0.7  # two SAEs share a feature when matched one-to-one at least this close
GRAPH_ANCHORS = 0.1  # fraction of the true pairs given to the anchored structural matching
GRAPH_RANDOM_DRAWS = 5  # G(n, m) graphs drawn for the baseline


class GraphParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An SAE's co-activation graph: the edge rule (engine/graph.py says it in full)."""

    path: str
    weight: GraphWeight = "jaccard"
    min_weight: float = GRAPH_MIN_WEIGHT  # an edge needs weight >= this ...
    min_count: int = GRAPH_MIN_COUNT  # ... and this many tokens where both fire
    seed: int = 0  # of the Louvain communities (and the comparison's random draws and anchors)


class GraphNodeParams(GraphParams, kw_only=True):
    """One feature in its graph, with its strongest neighbours."""

    feature: int
    n: int = 12  # neighbours listed, strongest edge first


class GraphCompareParams(GraphParams, kw_only=True):
    """`path`'s graph against `other`'s (same hook, same model)."""

    other: str
    feature: Optional[int] = None  # a feature of `path` whose matches in `other` are listed
    n: int = 10  # matches listed for `feature`
    threshold: float = GRAPH_SHARED_COSINE
    anchors: float = GRAPH_ANCHORS
    draws: int = GRAPH_RANDOM_DRAWS


class GraphNeighbour(msgspec.Struct):
    feature: int
    weight: float  # the graph's edge weight (its `weight` measure)
    count: int  # tokens where both fire
    jaccard: float
    cosine: float  # of the two activation vectors over the indexed tokens
    degree: int  # the neighbour's own degree
    description: str = ""


class GraphCommunity(msgspec.Struct):
    id: int  # 0 is the largest
    size: int
    features: list[int]  # its strongest features (by strength), strongest first
    descriptions: list[str]
    description: str = ""  # the first few non-empty descriptions joined: the community's label


class Distribution(msgspec.Struct):
    """Counts over bins [edges[i], edges[i+1])."""

    edges: list[float]
    counts: list[int]


class GraphStats(Result):
    path: str
    hook: str
    d_sae: int
    tokens: int  # indexed tokens the co-occurrence was counted on
    weight: GraphWeight
    min_weight: float
    min_count: int
    rule: str  # the edge rule and the definitions, in words
    definition: str  # how co-occurrence was counted (from the index)
    nodes: int  # features that fired in the index
    dead: int  # features left out: they never fired in the index
    edges: int
    isolated: int  # nodes without an edge
    mean_degree: float
    median_degree: float
    max_degree: int
    mean_strength: float  # strength: the sum of a node's edge weights
    max_strength: float
    components: int  # connected components, isolated nodes included
    largest_component: int
    clustering: float  # average clustering coefficient, unweighted
    clustering_weighted: float
    modularity: float  # of the communities
    communities: list[GraphCommunity]  # largest first, up to `COMMUNITIES_LISTED` with more than one node
    degree_counts: list[int]  # nodes of degree 0, 1, 2, ...
    strength: Distribution
    # the highest-degree features; here `weight` is the strength, `count` the tokens it fires on,
    # and `jaccard`/`cosine` are 0 (they belong to an edge)
    hubs: list[GraphNeighbour]


class GraphNode(Result):
    path: str
    feature: int
    description: str
    in_graph: bool  # False: the feature never fired in the index
    fires: int  # tokens where it fired in the index
    degree: int
    strength: float
    clustering: float
    community: int  # a `GraphCommunity.id`; -1 outside the graph
    neighbours: list[GraphNeighbour]


class FeatureMatch(msgspec.Struct):
    feature: int  # in the other SAE
    score: float  # decoder cosine (by decoder) or the structural score (by structure)
    description: str = ""


class RandomBaseline(msgspec.Struct):
    """A graph's degree distribution against G(n, m) random graphs of its own size."""

    draws: int
    divergence_mean: float
    divergence_std: float
    distance_mean: float
    distance_std: float


class StructuralAccuracy(msgspec.Struct):
    method: Literal["signature", "anchored"]
    top1: float  # the decoder partner is the best structural candidate
    top10: float  # ... among the best ten
    evaluated: int  # A features scored: those with a decoder partner >= threshold (minus anchors)
    anchors: int  # true pairs given (anchored only)


class GraphComparison(Result):
    path: str
    other: str
    hook: str
    d_sae: int
    other_d_sae: int
    matching_note: str  # what matching means here (notably with different widths)
    nodes: int
    other_nodes: int
    edges: int
    other_edges: int
    degree_divergence: float  # Jensen-Shannon divergence of the degree distributions, base 2 (in [0, 1])
    degree_distance: float  # its square root, the JS distance
    random: RandomBaseline  # `path`'s graph against G(n, m)
    other_random: RandomBaseline
    threshold: float
    shared_fraction: float  # of the smaller SAE's features, decoder cosine >= threshold
    mean_cosine: float  # mean decoder cosine over all matched pairs
    encoder_shared_fraction: float  # the same, matching encoder directions instead
    encoder_mean_cosine: float
    agreement: float  # fraction of matched pairs the decoder and encoder assignments agree on
    structural: list[StructuralAccuracy]
    degree_counts: list[int]
    other_degree_counts: list[int]
    feature: Optional[int] = None
    description: str = ""  # of `feature`
    partner: Optional[FeatureMatch] = None  # its partner in the decoder assignment
    by_decoder: list[FeatureMatch] = []  # its best matches by decoder cosine
    by_structure: list[FeatureMatch] = []  # by the anchored structural score (itself not an anchor)
    by_signature: list[FeatureMatch] = []  # by graph statistics alone


GRAPH_PARAMS: dict[str, type[msgspec.Struct]] = {
    "graph.stats": GraphParams, "graph.node": GraphNodeParams, "graph.compare": GraphCompareParams}
GRAPH_RESULTS: dict[str, type[Result]] = {
    "graph.stats": GraphStats, "graph.node": GraphNode, "graph.compare": GraphComparison}
